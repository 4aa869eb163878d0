using Harness.Engine.Kernels;
using Harness.Engine.Tensors;
using AttentionMaskRule = Harness.Engine.Attention.AttentionMask;

namespace Harness.Engine.Ops;

/// <summary>
/// The ops one device computes, behind one interface: vLLM's <c>quant_method.apply(layer, x)</c> for devices. An op of
/// <c>Ops/*</c> checks its arguments and works out what is device-independent (shapes, dtypes, the dim moved last), then
/// calls <see cref="OpBackend.Of(Tensor)"/>'s object for its operands' device; it never branches on the device itself.
/// <list type="bullet">
/// <item><see cref="HostOps"/>: the host, the reference eager code (each op's host lines, in a <c>HostOps</c> part beside
/// the op in its file).</item>
/// <item>The CUDA device's (<c>Cuda/CudaBackend.Ops.cs</c>, one object per device, the same one as the tensor's
/// <see cref="ITensorBackend"/>): the CudaOps/CudaGemm kernel launches the ops made before.</item>
/// </list>
/// Methods returning <c>null</c> (or a <c>Supports</c>/<c>Fuses</c> flag of false) say this device has no fused kernel
/// for these operands; the op then composes the unfused ops, as before. Members are grouped as the CUDA kernels are
/// (element-wise, rows, attention, index, conv, GEMM). Arguments arrive checked; a backend only computes.
/// </summary>
internal interface IOpBackend
{
    /// <summary>torch's device string: "cpu", "cuda:0".</summary>
    string Name { get; }

    // --- element-wise (CudaOps.Elementwise) --------------------------------------------------------------------------

    /// <summary>op(x) for a float x, x's dtype (name: the torch op, for errors).</summary>
    Tensor Unary(UnaryOp op, Tensor x, string name);

    /// <summary>x ** exponent, torch's special cases (float x).</summary>
    Tensor Pow(Tensor x, double exponent);

    /// <summary>a op s with s a float32 scalar (float a), a's dtype.</summary>
    Tensor Scalar(BinaryOp op, Tensor a, float s, string name);

    /// <summary>a op b broadcast, computed in float32, rounded once to <paramref name="dt"/> (the result type).</summary>
    Tensor Binary(BinaryOp op, Tensor a, Tensor b, DType dt, string name);

    /// <summary>dst += src (src broadcasts to dst's shape; both float).</summary>
    void AddInPlace(Tensor dst, Tensor src);

    /// <summary>torch.clamp with the bounds already rounded to x's dtype (at least one set).</summary>
    Tensor Clamp(Tensor x, float? lo, float? hi);

    /// <summary>torch.where(mask, a, b) (mask bool) in <paramref name="dt"/>.</summary>
    Tensor Where(Tensor mask, Tensor a, Tensor b, DType dt);

    /// <summary>a cmp b broadcast, every dtype read as double, a bool result.</summary>
    Tensor Compare(Tensor a, Tensor b, Func<double, double, bool> cmp);

    /// <summary>act(x) (float x), x's dtype.</summary>
    Tensor Activation(Tensor x, ActivationKind kind);

    /// <summary>act(gate) * up in one pass (two roundings, as the two torch ops), or null where this device has no fused
    /// kernel for these operands (then the op runs act then mul).</summary>
    Tensor? Gated(Tensor gate, Tensor up, ActivationKind kind);

    /// <summary>F.softplus(x) (beta 1, threshold 20), x's dtype.</summary>
    Tensor Softplus(Tensor x);

    // --- rows and reductions (CudaOps.Rows) --------------------------------------------------------------------------

    /// <summary>A host row kernel over the last dim (float32 rows, rounded once to <paramref name="outDType"/>).</summary>
    Tensor RowWise(Tensor x, DType outDType, Ops.RowWise.RowKernel kernel);

    /// <summary>softmax / log_softmax over the last dim of <paramref name="rows"/> (the op moved the dim last);
    /// <paramref name="lastDim"/>: the caller's dim was the last one (torch rounds log_softmax's sum only there).</summary>
    Tensor Softmax(Tensor rows, bool log, DType dtype, bool lastDim);

    /// <summary>RMSNorm over the last dim (weight checked, of size n, or null for GemmaNoScale).</summary>
    Tensor RmsNorm(Tensor x, Tensor? weight, float eps, RmsNormKind kind);

    /// <summary>F.layer_norm over the last dim (weight/bias checked, or null).</summary>
    Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, double eps);

    /// <summary>sum = x + residual and RMSNorm(sum) (Llama's kind) fused, or null where this device has no fused pass for
    /// these operands (then the op adds and norms).</summary>
    (Tensor Sum, Tensor Normed)? AddRmsNorm(Tensor x, Tensor residual, Tensor weight, double eps, bool inPlace, ResidualNorm.Buffer? normedBuffer);

    /// <summary>RMSNorm(x) (Llama's kind) in one pass into <paramref name="normedBuffer"/>, or null where this device has
    /// no such pass (then the op runs <see cref="Norms.RmsNorm"/>).</summary>
    Tensor? RmsNormInto(Tensor x, Tensor weight, double eps, ResidualNorm.Buffer? normedBuffer);

    /// <summary>A reduction over the last dim of <paramref name="rows"/> (the op moved the dim last) into
    /// <paramref name="outShape"/>; <paramref name="kind"/> is <see cref="Reductions"/>' kind (its int value).</summary>
    (Tensor Values, Tensor? Indices) RowReduce(Tensor rows, int kind, bool withIndices, int[] outShape, DType dtype, string name);

    /// <summary>Per row of the last dim: mean and population std (float32, [..., 1]).</summary>
    (Tensor Mean, Tensor Std) MeanStd(Tensor x);

    /// <summary>The k largest along the last dim of <paramref name="src"/> (rank >= 1), values in <paramref name="dtype"/>,
    /// ties lower index first.</summary>
    (Tensor Values, Tensor Indices) TopK(Tensor src, int k, DType dtype);

    /// <summary>As <see cref="TopK"/> with this device's torch order among equal values (the host: torch's CPU
    /// partial_sort/nth_element order; a GPU: torch's CUDA order, lower index first).</summary>
    (Tensor Values, Tensor Indices) TopKTorchOrder(Tensor src, int k, DType dtype);

    /// <summary>y [slots, N] summed into [1, N] in ascending (id, slot) order with the ids read where they live, each add
    /// rounded to y's dtype (<see cref="IndexedExperts.SumInIdOrder"/>, arguments checked).</summary>
    Tensor SumInIdOrder(Tensor y, Tensor ids);

    // --- attention (CudaOps.Attention, CudaDecodeOps) -----------------------------------------------------------------

    /// <summary>rotate_half (float x, even last dim).</summary>
    Tensor RotateHalf(Tensor x);

    /// <summary>apply_rotary_pos_emb: q [.., d] with cos/sin already unsqueezed (<paramref name="c"/>, <paramref name="s"/>)
    /// broadcasting to q's <paramref name="shape"/>; the result in <paramref name="dt"/>.</summary>
    Tensor Rope(Tensor q, Tensor c, Tensor s, DType dt, int[] shape);

    /// <summary>-inf where <paramref name="mask"/> hides a key, in place on float32 scores [planes, t, s].</summary>
    void MaskScores(AttentionMaskRule mask, Tensor scores, int t, int s, int past, int[]? blocks);

    /// <summary>masked_fill(!visible, value) on float32 logits [B, N, per...] (one flag per element of [per], broadcast
    /// over the N planes).</summary>
    Tensor MaskedFill(Tensor logits, bool[] visible, int batch, int planes, float value);

    /// <summary>Whether this device has one kernel for causal (or sliding) attention over a cache
    /// (<see cref="CausalAttention"/>).</summary>
    bool FusesCausalAttention { get; }

    /// <summary>q [heads, t, hd] over keys/values [kv, past + t, hd], causal (window 0: none) -> [heads, t, hd].</summary>
    Tensor CausalAttention(Tensor q, Tensor keys, Tensor values, int past, int window, float scaling);

    /// <summary>Whether this device decodes at a position it holds itself (a CUDA graph step: <see cref="RopeAppendAt"/>,
    /// <see cref="AttentionAt"/>).</summary>
    bool DecodesAtDevicePosition { get; }

    /// <summary>RoPE of q and k and the cache append at the device's position, one kernel -> rotated q [heads, t, hd].</summary>
    Tensor RopeAppendAt(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor keys, Tensor values, Tensor position);

    /// <summary>Attention over the cache up to the device's position -> [heads, t, hd].</summary>
    Tensor AttentionAt(Tensor q, Tensor keys, Tensor values, Tensor position, int window, float scaling);

    // --- index (CudaOps.Index) ----------------------------------------------------------------------------------------

    /// <summary>F.embedding: rows of a 2-D table (checked) by int64/int32 ids.</summary>
    Tensor Embedding(Tensor weight, Tensor ids);

    /// <summary>A one-rank vocab-parallel lookup (the whole table) as this device's embedding kernel, which checks the ids
    /// itself (they may stay on the device); or null: the layer checks the ids on the host, naming the token, and gathers
    /// its rows (<see cref="ITensorBackend.IndexSelect"/>).</summary>
    Tensor? WholeVocabLookup(Tensor weight, Tensor ids);

    /// <summary>Whether this device runs a one-token MoE block from device-held expert ids (<see cref="IndexedExperts"/>)
    /// instead of the per-expert loop that reads the ids back.</summary>
    bool RoutesExpertsOnDevice { get; }

    /// <summary>table.index_select(0, ids) with the ids read where they live (in range by construction).</summary>
    Tensor TakeRows(Tensor table, Tensor ids);

    // --- conv (CudaOps.Conv) ------------------------------------------------------------------------------------------

    /// <summary>The 3x3 stride-2 pad-1 patches of channels-last x [B, H, W, C] -> [B*Ho*Wo, C*9] in x's dtype.</summary>
    Tensor Im2Col3x3S2(Tensor x);

    /// <summary>Depthwise causal conv1d, x [B, T, C], weight [C, 1, k] (checked) -> [B, T, C].</summary>
    Tensor DepthwiseCausalConv1d(Tensor x, Tensor weight);

    /// <summary>Gemma4's audio context windows: x [B, T, N, H] -> [B, N, u, ctx, H].</summary>
    Tensor ContextWindows(Tensor x, int u, int w, int ctx, int left);

    // --- GEMM (CudaGemm) ----------------------------------------------------------------------------------------------

    /// <summary>[M, K] x [K, N] -> [M, N] in the inputs' dtype (checked).</summary>
    Tensor Mm(Tensor a, Tensor b);

    /// <summary>[batch.., M, K] x [batch.., K, N] (already expanded to one batch) -> [batch.., M, N] in a's dtype.</summary>
    Tensor BatchedMm(Tensor a, Tensor b, int[] batch);

    /// <summary>The indexed expert GEMV (<see cref="IndexedExperts.Gemv"/>, arguments checked): x [1 or slots, K],
    /// stacked [E, N, K], ids int64 [slots] -> [slots, N].</summary>
    Tensor ExpertGemv(Tensor x, Tensor stacked, Tensor ids);
}

/// <summary>Where an op finds its backend: the ONE place the device is chosen, from the operands' storage.</summary>
internal static class OpBackend
{
    /// <summary>x's device's ops: the host's (<see cref="HostOps"/>) or the one its device memory came with.</summary>
    public static IOpBackend Of(Tensor x) => x.Backend switch
    {
        HostBackend => HostOps.Instance,
        IOpBackend ops => ops,
        var other => throw new NotSupportedException($"{x}: no ops for tensors on {other.Name}"),
    };

    /// <summary>The first operand on a device decides (a host operand, a 0-dim scalar or a table, moves to it).</summary>
    public static IOpBackend Of(Tensor a, Tensor b) => Of(OnHost(a) ? b : a);

    /// <inheritdoc cref="Of(Tensor, Tensor)"/>
    public static IOpBackend Of(Tensor a, Tensor b, Tensor c) => Of(!OnHost(a) ? a : !OnHost(b) ? b : c);

    /// <summary>Whether every tensor is in host memory: the precondition of the host's own fused kernels (the packed
    /// GEMM, the fused attention, add+norm and gated passes), which read the bytes from C#.</summary>
    public static bool OnHost(Tensor t) => t.Backend is HostBackend;

    /// <inheritdoc cref="OnHost(Tensor)"/>
    public static bool OnHost(Tensor a, Tensor b) => OnHost(a) && OnHost(b);

    /// <inheritdoc cref="OnHost(Tensor)"/>
    public static bool OnHost(Tensor a, Tensor b, Tensor c) => OnHost(a) && OnHost(b) && OnHost(c);
}

/// <summary>
/// The host's ops: the reference eager code, in float32 with one rounding per torch op. Each op family's part lives beside
/// the op in its file (<c>Elementwise.cs</c>, <c>Norms.cs</c>, ...); this part holds what the host lacks.
/// </summary>
internal sealed partial class HostOps : IOpBackend
{
    public static readonly HostOps Instance = new();

    private HostOps() { }

    public string Name => "cpu";

    public void MaskScores(AttentionMaskRule mask, Tensor scores, int t, int s, int past, int[]? blocks) =>
        mask.Apply(scores.Span<float>(), t, s, past, blocks);

    public Tensor MaskedFill(Tensor logits, bool[] visible, int batch, int planes, float value) =>
        AttentionMaskRule.MaskedFillOnHost(logits, visible, batch, planes, value);

    public Tensor? WholeVocabLookup(Tensor weight, Tensor ids) => null;

    // The host's attention is the eager ops (AttentionCore.Eager) or its own fused pass (Ops.Attention); it has no single
    // causal-attention kernel and no device-held position.
    public bool FusesCausalAttention => false;

    public bool DecodesAtDevicePosition => false;

    public Tensor CausalAttention(Tensor q, Tensor keys, Tensor values, int past, int window, float scaling) =>
        throw new NotSupportedException("causal attention in one kernel: the host runs the eager ops or Ops.Attention.CausalInto");

    public Tensor RopeAppendAt(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor keys, Tensor values, Tensor position) =>
        throw new NotSupportedException("rope + append at a device-held position: the host's cache position is its Length");

    public Tensor AttentionAt(Tensor q, Tensor keys, Tensor values, Tensor position, int window, float scaling) =>
        throw new NotSupportedException("attention at a device-held position: the host's cache position is its Length");
}
