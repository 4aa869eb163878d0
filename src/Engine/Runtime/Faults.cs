namespace Harness.Engine.Runtime;

/// <summary>
/// Named faults that re-create a known bug inside the engine, so a scenario can prove its check fails
/// when the bug is present. Each name is one real bug; none is active unless a test or the CLI injects it.
/// </summary>
public static class Faults
{
    /// <summary>
    /// The batch-invariant matmul without its ND x ND path: only 2D x 2D, 3D x 3D, ND x 2D and 2D x ND are accepted,
    /// as in vLLM before the Gemma4-E2B fix, so a 4D x 3D product fails with a shape error.
    /// </summary>
    public const string MatmulNoNdBroadcast = "matmul-no-nd-broadcast";

    /// <summary>
    /// Sequence parallelism slices the full residual as residual[0:L] on every rank instead of residual[rank*L:(rank+1)*L]
    /// before the fused add + RMSNorm: ranks above 0 add the wrong tokens' residual (vLLM's SP bug).
    /// </summary>
    public const string SpResidualFirstSlice = "sp-residual-first-slice";

    /// <summary>
    /// With SP and PP, the scattered residual crossing a pipeline stage is sliced to this rank's L rows instead of
    /// all-gathered over TP, so the next stage gets [L, hidden] where it expects every token.
    /// </summary>
    public const string SpPpResidualSliced = "sp-pp-residual-sliced";

    /// <summary>
    /// A RowParallelLinear fed a full-width input is built with input_is_parallel=True (Gemma3n's multimodal embedder
    /// under TP=2): the rank multiplies [tokens, in] by its [in/tp, out] shard and dies with a shape error.
    /// </summary>
    public const string RowParallelInputIsParallel = "row-parallel-input-is-parallel";

    /// <summary>
    /// "gelu_pytorch_tanh" is mapped to exact (erf) GELU, as when Gemma4's MoE experts were given the wrong activation:
    /// outputs move by up to ~5e-4 per activation.
    /// </summary>
    public const string GeluTanhAsExact = "gelu-tanh-as-exact";

    /// <summary>
    /// Attention output reshaped to the full hidden_size instead of (*input_shape, -1), as Qwen2-VL's attention once
    /// did: invisible at TP=1, where heads * head_dim == hidden_size, but each rank holds heads/tp heads under TP.
    /// </summary>
    public const string AttentionReshapeHiddenSize = "attention-reshape-hidden-size";

    /// <summary>
    /// rope_parameters' scaling (linear, llama3) ignored: the plain inv_freq is used, as when a loader drops rope_scaling.
    /// </summary>
    public const string RopeScalingIgnored = "rope-scaling-ignored";

    /// <summary>
    /// The gated MLP's halves swapped: act(up) * gate instead of act(gate) * up, as when merged gate_up weights are
    /// loaded in the wrong order.
    /// </summary>
    public const string GateUpSwapped = "gate-up-swapped";

    /// <summary>
    /// Gemma3n's gaussian top-k (the sparse MLP layers) takes its mean and std over each rank's shard of the gate
    /// instead of the whole intermediate row, as an activation that only sees the local gate_up output does under TP
    /// (vLLM's GeluAndMulSparse): exact at TP=1, a different cutoff on every rank at TP=2.
    /// </summary>
    public const string SparseTopKRankLocal = "sparse-topk-rank-local";

    /// <summary>
    /// A precision-only bug: the RMSNorm's sum of squares accumulated in bfloat16 (every partial sum rounded) where HF's
    /// RMSNorm keeps it in float32 (<c>hidden_states.to(torch.float32).pow(2).mean(-1)</c>), as a kernel that accumulates in
    /// the input dtype does. Every value is still right to a few bf16 ulps; only precision is lost.
    /// </summary>
    public const string RmsNormSumOfSquaresBf16 = "rms-norm-sum-of-squares-bf16";

    /// <summary>rope_theta not read: HF's default 10000 is used (a loader that looks for the key under another name).</summary>
    public const string RopeThetaDefault = "rope-theta-default";

    /// <summary>rms_norm_eps not read: HF's default 1e-6 is used instead of the config's (a slightly wrong norm eps).</summary>
    public const string RmsNormEpsDefault = "rms-norm-eps-default";

    /// <summary>
    /// The decoder layer's residual branch scaled by 1 + 2^-6 (a residual multiplier applied where the model has none,
    /// or a layer scale read from the wrong tensor): every layer output 1.6 % too large along its attention/MLP branch.
    /// </summary>
    public const string ResidualScaleOff = "residual-scale-off";

    /// <summary>
    /// A decode-only bug: each generated token is rotated at the position after its own (position + 1), as a decode path
    /// that advances its position counter before the step instead of after; the prompt's positions are right, so the
    /// prefill is bit-for-bit unchanged and only the decode steps' attention sees keys at the wrong relative distances.
    /// </summary>
    public const string DecodePositionOffByOne = "decode-position-off-by-one";

    /// <summary>
    /// Qwen2-VL's decode steps at M-RoPE position cache length, the prompt's rope delta dropped (a port of
    /// <c>delta = cache_position[0] + self.rope_deltas</c> that forgets the delta). The prompt is right; every decode step
    /// after an image or video prompt (delta != 0) is at the wrong position. Text-only prompts (delta 0) do not see it.
    /// </summary>
    public const string MropeDecodeDeltaIgnored = "mrope-decode-delta-ignored";

    /// <summary>
    /// Gemma3n's audio attention without the Transformer-XL relative shift (<c>_relative_shift</c>): term_bd [.., W, F] padded
    /// to C and read as [.., W, C] unskewed, so query w in a block sees key column c at relative index c instead of c - w
    /// (a port that drops the pad-to-C+1 trick). The content term is right; the relative-position bias is on the wrong keys.
    /// </summary>
    public const string UsmRelShiftSkipped = "usm-rel-shift-skipped";

    /// <summary>
    /// Gemma3n's audio subsampling norm (Gemma3nAudioCumulativeGroupNorm) computed as a plain group norm: each frame's mean
    /// and variance over its own values instead of the statistics cumulated over all frames so far.
    /// </summary>
    public const string CumulativeNormPlainMean = "cumulative-norm-plain-mean";

    /// <summary>
    /// Gemma3n's MobileNetV5 vision tower with its convs padded symmetrically as PyTorch pads (get_padding) where timm's
    /// padding='same' is TensorFlow's SAME (Conv2dSame pads the extra row and column after): a port that maps 'same' to
    /// nn.Conv2d(padding=k // 2). Same output size at stride 2, every window shifted by one pixel.
    /// </summary>
    public const string MobileNetSamePadSymmetric = "mobilenet-same-pad-symmetric";

    /// <summary>Gemma3n's MobileNetV5 UniversalInvertedResidual blocks without their residual add (has_skip ignored).</summary>
    public const string MobileNetUirResidualDropped = "mobilenet-uir-residual-dropped";

    /// <summary>Every fault the engine knows, with what it re-creates.</summary>
    public static readonly IReadOnlyDictionary<string, string> Known = new Dictionary<string, string>
    {
        [MatmulNoNdBroadcast] = "batch-invariant matmul rejects ND x ND with broadcast batch dims (vLLM before the Gemma4-E2B fix)",
        [SpResidualFirstSlice] = "sequence parallelism slices the residual as [0:L] on every rank instead of [rank*L:(rank+1)*L]",
        [SpPpResidualSliced] = "SP+PP: the scattered residual is sliced, not all-gathered, when it crosses a pipeline stage",
        [RowParallelInputIsParallel] = "a row-parallel layer fed a full-width input is built with input_is_parallel=True",
        [GeluTanhAsExact] = "gelu_pytorch_tanh (Gemma4's MoE experts) computed as exact erf GELU",
        [RopeScalingIgnored] = "rope_parameters' scaling (linear, llama3) ignored: the plain inv_freq is used",
        [GateUpSwapped] = "gated MLP computed as act(up) * gate: merged gate_up weights loaded in the wrong order",
        [AttentionReshapeHiddenSize] = "attention output reshaped to hidden_size instead of (*input_shape, -1) (Qwen2-VL under TP)",
        [SparseTopKRankLocal] = "Gemma3n's gaussian top-k statistics taken over each rank's gate shard instead of the whole row (TP)",
        [RmsNormSumOfSquaresBf16] = "precision only: RMSNorm's sum of squares accumulated in bfloat16 where HF keeps float32",
        [RopeThetaDefault] = "rope_theta not read: HF's default 10000 used instead of the config's",
        [RmsNormEpsDefault] = "rms_norm_eps not read: HF's default 1e-6 used instead of the config's",
        [ResidualScaleOff] = "the decoder layer's attention and MLP branches scaled by 1 + 2^-6 before the residual add",
        [DecodePositionOffByOne] = "decode only: each generated token rotated at its position + 1 (the prompt's positions right)",
        [MropeDecodeDeltaIgnored] = "Qwen2-VL decode steps at position cache length, the prompt's M-RoPE rope delta dropped",
        [UsmRelShiftSkipped] = "Gemma3n's audio attention without the Transformer-XL relative shift of its position term",
        [CumulativeNormPlainMean] = "Gemma3n's audio cumulative group norm with each frame's own mean and variance (a plain group norm)",
        [MobileNetSamePadSymmetric] = "Gemma3n's MobileNetV5 vision tower convs padded PyTorch-style (symmetric) instead of timm's TF-style 'same'",
        [MobileNetUirResidualDropped] = "Gemma3n's MobileNetV5 UniversalInvertedResidual blocks without their residual add",
    };

    /// <summary>
    /// Checks a fault name (an unknown one lists the known ones). Faults are never ambient: a scenario maps its fault's name
    /// to the model's constructor options, its config or its weights; nothing inside a layer or an op reads a switch.
    /// </summary>
    public static string Check(string name) => Known.ContainsKey(name) ? name
        : throw new ArgumentException($"unknown fault '{name}'; known faults: {string.Join(", ", Known.Keys.Order())}", nameof(name));
}
