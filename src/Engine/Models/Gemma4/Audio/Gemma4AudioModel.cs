using Harness.Engine.Capture;
using Harness.Engine.Models.Common;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4.Audio;

/// <summary>
/// Gemma4AudioModel (HF modeling_gemma4.py 1924-2007), the USM-style audio encoder of Gemma-4-E2B/E4B: mel features
/// [B, T, F] to soft tokens [B, T/4, output_proj_dims]. Module names are HF's ("model.audio_tower.layers.0.self_attn"), so
/// the harness compares each with the reference's hook on the same path.
/// <code>
/// h, mask = subsample_conv_projection(features, mask)   # 2x (Conv2d 3x3/2 -> LayerNorm(C) -> ReLU), then Linear: [B, T/4, hidden]
/// pos = rel_pos_enc(h)                                   # [F, hidden] sinusoids of positions C//2 .. 0
/// blocks = sliding window (the token + left-2 earlier, right-1 later) AND valid key, in blocks [B, U, W, C]
/// for layer in layers: h = layer(h, blocks, pos)         # conformer: FF/2, attention, light conv, FF/2, norm
/// return output_proj(h), mask                           # Linear with bias to output_proj_dims; mask True = valid frame
/// </code>
/// The sliding-window mask is the boolean one create_bidirectional_mask builds for sdpa. Under attn_implementation="eager",
/// HF 5.12.1 builds an additive float mask and Gemma4AudioAttention misreads it as a boolean one (transformers issue 48818);
/// the engine follows the boolean semantics, and the harness checks it against HF under sdpa.
/// Every product goes through <see cref="Matmul"/> with the <see cref="MatmulOptions"/> given to the constructor.
/// </summary>
public sealed class Gemma4AudioModel
{
    public const string DefaultPrefix = "model.audio_tower";

    private readonly Gemma4AudioConfig _c;
    private readonly IActivationSink _sink;
    private readonly MatmulOptions _matmul;
    private readonly Tensor _conv0, _norm0, _conv1, _norm1, _inputProjT;
    private readonly Gemma4AudioLayer[] _layers;
    private readonly Tensor _outputProjT, _outputProjBias;

    public string Prefix { get; }
    public Gemma4AudioConfig Config => _c;

    /// <param name="weights">The checkpoint (HF names, e.g. "model.audio_tower.layers.0.self_attn.q_proj.linear.weight").</param>
    /// <param name="config">The audio_config.</param>
    /// <param name="sink">Where module outputs are recorded (HF module paths); null records nothing.</param>
    /// <param name="matmul">The matmul every product runs on (<see cref="MatmulOptions.Default"/>: torch.matmul's shape rules).</param>
    /// <param name="prefix">The tower's module path in the checkpoint.</param>
    public Gemma4AudioModel(IWeightSource weights, Gemma4AudioConfig config, IActivationSink? sink = null, MatmulOptions? matmul = null,
        string prefix = DefaultPrefix)
    {
        _c = config;
        _sink = sink ?? NoCapture.Instance;
        _matmul = matmul ?? MatmulOptions.Default;
        Prefix = prefix;
        string s = $"{prefix}.subsample_conv_projection";
        int c0 = config.SubsamplingConvChannels[0], c1 = config.SubsamplingConvChannels[1];
        const string channels = "audio_config.subsampling_conv_channels";
        _conv0 = Gemma4TowerKernels.Expect(weights.Get($"{s}.layer0.conv.weight"), $"{s}.layer0.conv.weight", [c0, 1, 3, 3], channels);
        _norm0 = weights.Get($"{s}.layer0.norm.weight");
        _conv1 = Gemma4TowerKernels.Expect(weights.Get($"{s}.layer1.conv.weight"), $"{s}.layer1.conv.weight", [c1, c0, 3, 3], channels);
        _norm1 = weights.Get($"{s}.layer1.norm.weight");
        // input_proj_linear's input is hard-wired to (channels[0] // 4) * channels[1] (HF 394)
        _inputProjT = Gemma4TowerKernels.Expect(weights.Get($"{s}.input_proj_linear.weight"), $"{s}.input_proj_linear.weight",
            [config.HiddenSize, c0 / 4 * c1], $"{channels}, hidden_size").T();
        _layers = Enumerable.Range(0, config.NumHiddenLayers)
            .Select(i => new Gemma4AudioLayer(weights, $"{prefix}.layers.{i}", config, _matmul)).ToArray();
        _outputProjT = Gemma4TowerKernels.Expect(weights.Get($"{prefix}.output_proj.weight"), $"{prefix}.output_proj.weight",
            [config.OutputProjDims, config.HiddenSize], "audio_config.output_proj_dims, hidden_size").T();
        _outputProjBias = weights.Get($"{prefix}.output_proj.bias");
    }

    /// <summary>The encoder's output: soft tokens and which of them are valid frames.</summary>
    /// <param name="SoftTokens">[B, T', output_proj_dims] in the model dtype, T' = ceil(ceil(T/2)/2).</param>
    /// <param name="Mask">[B, T'] bool, true = valid frame (Gemma4Model keeps only these).</param>
    public sealed record Output(Tensor SoftTokens, Tensor Mask)
    {
        /// <summary>The valid frames' soft tokens, clip after clip: [valid frames, output_proj_dims] (what Gemma4Model merges).</summary>
        public Tensor ValidSoftTokens()
        {
            var valid = Gemma4TowerKernels.Bools(Mask);
            int t = Mask.Size(1);
            var rows = Enumerable.Range(0, valid.Length).Where(i => valid[i])
                .Select(i => SoftTokens.Select(0, i / t).Select(0, i % t).Unsqueeze(0)).ToList();
            return rows.Count == 0 ? Tensor.Zeros(SoftTokens.DType, 0, SoftTokens.Size(-1)) : Tensor.Cat(rows, 0);
        }
    }

    /// <summary>
    /// Encodes mel features to soft tokens.
    /// </summary>
    /// <param name="features">[B, T, F] input_features in the model dtype; F must satisfy ceil(ceil(F/2)/2) == subsampling_conv_channels[0] / 4.</param>
    /// <param name="mask">[B, T] bool input_features_mask, true = valid frame (null: all valid).</param>
    public Output Forward(Tensor features, Tensor? mask = null)
    {
        if (features.Rank != 3) throw new ArgumentException($"{Prefix}: input_features must be [batch, frames, mel_bins], got {Shape.Format(features.Shape)}");
        int b = features.Size(0), t = features.Size(1);
        var valid = mask is null ? Enumerable.Repeat(true, b * t).ToArray() : Gemma4TowerKernels.Bools(mask);
        if (valid.Length != b * t) throw new ArgumentException($"{Prefix}: input_features_mask {Shape.Format(mask!.Shape)} does not match input_features {Shape.Format(features.Shape)}");

        // hidden_states, output_mask = self.subsample_conv_projection(input_features, attention_mask)
        var (h, outValid) = Run($"{Prefix}.subsample_conv_projection", () => Subsample(features, valid, b, t));
        Record($"{Prefix}.subsample_conv_projection", h);
        int tOut = h.Size(1);

        // position_embeddings = self.rel_pos_enc(hidden_states)
        var pos = RelativePositionEmbeddings(_c, h.DType);                                        // [F, hidden]
        // attention_mask = create_bidirectional_mask(..., and_mask_function=sliding_window_mask_function((left-1, right))), blocked to 5-D
        var blocks = BlockedMask(outValid, b, tOut, _c);                                        // [B, U, W, C]

        foreach (var layer in _layers) h = layer.Forward(h, pos, blocks, _sink);

        // hidden_states = self.output_proj(hidden_states)
        h = Run($"{Prefix}.output_proj", () => Elementwise.Add(Matmul.Forward(h, _outputProjT, _matmul), _outputProjBias));
        Record($"{Prefix}.output_proj", h);
        return new Output(h, Tensor.FromArray(outValid, b, tOut));
    }

    // Gemma4AudioSubSampleConvProjection: two (mask -> Conv2d 3x3 stride 2 -> LayerNorm over channels -> ReLU) layers, channels
    // last throughout (HF permutes to [B, T, F, C] for the LayerNorm and back), then [B, T', F', C1] -> [B, T', F'*C1] -> Linear.
    private (Tensor, bool[]) Subsample(Tensor features, bool[] valid, int b, int t)
    {
        var h = features.Unsqueeze(-1);                                                          // [B, T, F, 1]
        (h, valid, t) = SubsampleLayer(h, valid, b, t, _conv0, _norm0);                          // [B, T/2, F/2, C0]
        (h, valid, t) = SubsampleLayer(h, valid, b, t, _conv1, _norm1);                          // [B, T/4, F/4, C1]
        var flat = h.Reshape(b, t, -1);                                                          // [B, T', F'*C1], (f, c) order as HF's permute(0, 2, 3, 1)
        if (flat.Size(-1) != _inputProjT.Size(0))
            throw new ArgumentException(
                $"{Prefix}.subsample_conv_projection.input_proj_linear: the subsampled features have {flat.Size(-1)} values per frame " +
                $"({h.Size(2)} mel bins x {h.Size(3)} channels) but the layer takes {_inputProjT.Size(0)} (channels[0]/4 x channels[1]): " +
                $"the mel bin count F must satisfy ceil(ceil(F/2)/2) == {_c.SubsamplingConvChannels[0]}/4");
        return (Matmul.Forward(flat, _inputProjT, _matmul), valid);
    }

    private (Tensor, bool[], int) SubsampleLayer(Tensor h, bool[] valid, int b, int t, Tensor conv, Tensor norm)
    {
        // hidden_states = hidden_states * mask[:, None, :, None]
        var m = Tensor.Zeros(h.DType, b, t, 1, 1);
        for (int i = 0; i < b * t; i++) if (valid[i]) m.Set(1.0, i / t, i % t, 0, 0);
        h = Elementwise.Mul(h, m);
        // self.conv(...) -> self.norm(permute to channels last) -> ReLU
        h = TowerOps.Conv3x3Stride2ChannelsLast(h, conv, _matmul);                      // [B, ceil(T/2), ceil(F/2), C]
        h = Activation.Apply(Norms.LayerNorm(h, norm, null, _c.RmsNormEps), ActivationKind.Relu);
        // mask = mask[:, ::2]
        int tOut = h.Size(1);
        var next = new bool[b * tOut];
        for (int bi = 0; bi < b; bi++)
            for (int i = 0; i < tOut; i++) next[bi * tOut + i] = valid[bi * t + 2 * i];
        return (h, next, tOut);
    }

    /// <summary>
    /// Gemma4AudioRelPositionalEncoding: positions p = C//2, C//2 - 1, ..., 0, the USM timing signal
    /// (<see cref="UsmLocalAttention.TimingSignal"/>), cast to the model dtype. [F, hidden].
    /// </summary>
    public static Tensor RelativePositionEmbeddings(Gemma4AudioConfig c, DType dtype) =>
        UsmLocalAttention.TimingSignal(c.HiddenSize, c.ContextSize / 2, c.ContextSize / 2 + 1, dtype);

    /// <summary>
    /// The blocked attention mask [B, U, W, C] (true = attend): HF's sdpa mask[b, q, k] = valid[b, k] and
    /// 0 &lt;= q - k &lt; left - 1 or 0 &lt; k - q &lt; right (sliding_window_mask_function((left-1, right))), then
    /// _convert_4d_mask_to_blocked_5d: query q = u*W + w, key k = u*W - (left-1) + c, false outside [0, T).
    /// </summary>
    public static bool[] BlockedMask(bool[] valid, int b, int t, Gemma4AudioConfig c) =>
        new UsmLocalAttention(c.NumAttentionHeads, c.HeadDim, c.AttentionChunkSize, c.AttentionContextLeft - 1, c.AttentionContextRight,
            c.AttentionLogitCap, MatmulOptions.Default).BlockedMask(valid, b, t, c.AttentionContextLeft - 2, c.AttentionContextRight - 1);

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, 0, value, ShardSpec.Whole);
    }

    internal static T Run<T>(string module, Func<T> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is not ModuleFailedException)
        {
            throw new ModuleFailedException(module, 0, e);
        }
    }
}
