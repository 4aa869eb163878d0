using Harness.Engine.Capture;
using Harness.Engine.Models.Common;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n.Audio;

/// <summary>
/// Gemma3nAudioEncoder (HF modeling_gemma3n.py 1456-1534), the USM conformer of Gemma 3n, in pure torch:
/// <code>
/// audio_encodings = self.subsample_conv_projection(audio_mel)              # [B, T_sub, D]
/// indices = clamp(arange(T_sub) * time_stride_product, max=T - 1); current_mask = gather(audio_mel_mask, 1, indices)
/// for block in self.conformer: audio_encodings = block(audio_encodings, current_mask)
/// if conf_reduction_factor > 1: audio_encodings, current_mask = audio_encodings[:, ::r], current_mask[:, ::r]
/// audio_encodings = audio_encodings.masked_fill(current_mask.unsqueeze(-1), 0.0)
/// </code>
/// audio_mel_mask is True at PADDING (Gemma3nModel passes ~input_features_mask). Records every module under HF's path
/// (<see cref="Modules"/>), the tower's output under the tower's own path. The feed-forwards and light convs are the USM
/// parts shared with Gemma4's tower (<see cref="Gemma4AudioFeedForward"/>, <see cref="Gemma4AudioLightConv1d"/> with plain
/// linears and silu); the attention's blocks, relative shift and tail are <see cref="UsmLocalAttention"/>. Gemma3n's own
/// pieces are the subsampling convs with their cumulative group norm (<see cref="Gemma3nAudioSscpConvBlock"/>), the
/// attention's scaling and sinusoid projection (<see cref="Gemma3nAudioAttention"/>) and the block
/// (<see cref="Gemma3nAudioConformerBlock"/>). Runs on the host (its convs are host im2col), in the model dtype, every
/// product through <see cref="Matmul"/> with the given <see cref="MatmulOptions"/>.
/// </summary>
public sealed class Gemma3nAudioEncoder
{
    public const string DefaultPrefix = "model.audio_tower";

    private readonly Gemma3nAudioConfig _c;
    private readonly IActivationSink _sink;
    private readonly MatmulOptions _matmul;
    private readonly Gemma3nAudioSscpConvBlock _conv0, _conv1;
    private readonly Tensor _inputProjT;
    private readonly Gemma3nAudioConformerBlock[] _blocks;

    public string Prefix { get; }
    public Gemma3nAudioConfig Config => _c;

    /// <param name="weights">The checkpoint (HF names, e.g. "model.audio_tower.conformer.0.attention.attn.q_proj.weight").</param>
    /// <param name="config">The audio_config.</param>
    /// <param name="sink">Where module outputs are recorded (HF module paths); null records nothing.</param>
    /// <param name="options">The planted faults (<see cref="Gemma3nOptions.AudioRelShiftSkipped"/>, <see cref="Gemma3nOptions.AudioSscpNormPlainMean"/>); null: none.</param>
    /// <param name="matmul">The matmul every product runs on.</param>
    /// <param name="prefix">The tower's module path in the checkpoint.</param>
    public Gemma3nAudioEncoder(IWeightSource weights, Gemma3nAudioConfig config, IActivationSink? sink = null, Gemma3nOptions? options = null,
        MatmulOptions? matmul = null, string prefix = DefaultPrefix)
    {
        _c = config;
        _sink = sink ?? NoCapture.Instance;
        _matmul = matmul ?? MatmulOptions.Default;
        options ??= Gemma3nOptions.Default;
        Prefix = prefix;
        string s = $"{prefix}.subsample_conv_projection";
        _conv0 = new Gemma3nAudioSscpConvBlock(weights, $"{s}.conv_0", config, 0, options.AudioSscpNormPlainMean, _matmul);
        _conv1 = new Gemma3nAudioSscpConvBlock(weights, $"{s}.conv_1", config, 1, options.AudioSscpNormPlainMean, _matmul);
        // self.input_proj_linear = nn.Linear(final_c_out * final_f_out, hidden_size, bias=False)
        _inputProjT = Gemma4TowerKernels.Expect(weights.Get($"{s}.input_proj_linear.weight"), $"{s}.input_proj_linear.weight",
            [config.HiddenSize, config.SscpConvChannelSize[1] * config.FreqOut(1)], "audio_config.sscp_conv_channel_size, input_feat_size, hidden_size").T();
        _blocks = Enumerable.Range(0, config.ConfNumHiddenLayers)
            .Select(i => new Gemma3nAudioConformerBlock(weights, $"{prefix}.conformer.{i}", config, options, _matmul)).ToArray();
    }

    /// <summary>The module paths the encoder records, in forward order.</summary>
    public static IReadOnlyList<string> Modules(int layers, string prefix = DefaultPrefix)
    {
        string s = $"{prefix}.subsample_conv_projection";
        var list = new List<string> { $"{s}.conv_0", $"{s}.conv_1", s };
        for (int i = 0; i < layers; i++)
        {
            string b = $"{prefix}.conformer.{i}";
            list.AddRange([$"{b}.ffw_layer_start", $"{b}.attention.attn", $"{b}.attention", $"{b}.lconv1d", $"{b}.ffw_layer_end", b]);
        }
        list.Add(prefix);
        return list;
    }

    /// <summary>The encoder's output.</summary>
    /// <param name="Encodings">[B, T_out, hidden] in the model dtype, zero at padding (last_hidden_state).</param>
    /// <param name="Padding">[B, T_out] true at PADDING (audio_mel_mask, HF's polarity).</param>
    public sealed record Output(Tensor Encodings, bool[] Padding);

    /// <param name="features">[B, T, input_feat_size] input_features in the model dtype.</param>
    /// <param name="valid">[B * T] true at a valid frame (input_features_mask; null: all valid).</param>
    public Output Forward(Tensor features, bool[]? valid = null)
    {
        if (features.Rank != 3 || features.Size(2) != _c.InputFeatSize)
            throw new ArgumentException($"{Prefix}: input_features must be [batch, frames, {_c.InputFeatSize}] (audio_config.input_feat_size), got {Shape.Format(features.Shape)}");
        int b = features.Size(0), t = features.Size(1);
        valid ??= Enumerable.Repeat(true, b * t).ToArray();
        if (valid.Length != b * t) throw new ArgumentException($"{Prefix}: {valid.Length} input_features_mask flags for input_features {Shape.Format(features.Shape)}");

        // audio_encodings = self.subsample_conv_projection(audio_mel)
        string s = $"{Prefix}.subsample_conv_projection";
        var h = Run(s, () =>
        {
            var x = Step(_conv0.Prefix, () => _conv0.Forward(features.Unsqueeze(-1)), channelsFirst: true);   // [B, T1, F1, C0]
            x = Step(_conv1.Prefix, () => _conv1.Forward(x), channelsFirst: true);                        // [B, T2, F2, C1]
            // x.permute(0, 2, 3, 1).contiguous().view(b, t_out, f_out * c_out): channels last already, (f, c) order
            return Matmul.Forward(x.Reshape(b, x.Size(1), -1), _inputProjT, _matmul);                    // [B, T_sub, D]
        });
        Record(s, h);
        int tSub = h.Size(1);

        // indices = clamp(arange(t_sub) * time_stride_product, max=T - 1); current_mask = gather(audio_mel_mask, 1, indices)
        var padding = new bool[b * tSub];
        for (int bi = 0; bi < b; bi++)
            for (int i = 0; i < tSub; i++)
                padding[bi * tSub + i] = !valid[bi * t + Math.Min(i * _c.TimeStrideProduct, t - 1)];

        foreach (var block in _blocks) h = block.Forward(h, padding, _sink);

        // audio_encodings[:, ::r]; current_mask[:, ::r]; masked_fill(current_mask.unsqueeze(-1), 0.0)
        var (output, kept) = Run(Prefix, () => Reduce(h, padding, b, tSub));
        Record(Prefix, output);
        return new Output(output, kept);
    }

    private (Tensor, bool[]) Reduce(Tensor h, bool[] padding, int b, int t)
    {
        int r = _c.ConfReductionFactor, tOut = (t + r - 1) / r;
        var idx = Enumerable.Range(0, tOut).Select(i => (long)i * r).ToArray();
        var reduced = r > 1 ? h.IndexSelect(1, Tensor.FromArray(idx, idx.Length)) : h;                                       // [B, ceil(T/r), D]
        var kept = new bool[b * tOut];
        var keep = Tensor.Zeros(h.DType, b, tOut, 1);
        for (int bi = 0; bi < b; bi++)
            for (int i = 0; i < tOut; i++)
            {
                kept[bi * tOut + i] = padding[bi * t + i * r];
                if (!kept[bi * tOut + i]) keep.Set(1.0, bi, i, 0);
            }
        return (Elementwise.Mul(reduced, keep), kept);                                        // masked_fill(..., 0.0)
    }

    private Tensor Step(string module, Func<Tensor> body, bool channelsFirst)
    {
        var y = body();
        // HF's conv blocks return [B, C, T, F]; the engine stays channels last
        if (_sink.Wants(module)) _sink.Record(module, 0, channelsFirst ? y.Permute(0, 3, 1, 2).Contiguous() : y, ShardSpec.Whole);
        return y;
    }

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, 0, value, ShardSpec.Whole);
    }

    internal static T Run<T>(string module, Func<T> body) => Gemma4AudioModel.Run(module, body);
}

/// <summary>
/// Gemma3nAudioSSCPConvBlock (HF 662-728) with its Gemma3nAudioCumulativeGroupNorm (553-659), channels last:
/// <code>
/// x = F.pad(x, (1, 1, 0, kernel_h - 1))              # frequency 1 | 1, time 0 | k-1 ("reverse causal")
/// x = self.conv(x)                                   # Conv2d(kernel (kh, kw), stride (sh, sw), bias=False)
/// x = self.norm(x.permute(0, 2, 3, 1))               # cumulative group norm over [F, C], cumulative over time
/// return relu(x.permute(0, 3, 1, 2))
/// </code>
/// </summary>
public sealed class Gemma3nAudioSscpConvBlock
{
    private readonly Tensor _conv, _norm;
    private readonly (int Time, int Freq) _stride;
    private readonly int _kernelTime;
    private readonly double _eps;
    private readonly bool _plainMean;
    private readonly MatmulOptions _matmul;

    public string Prefix { get; }

    /// <param name="plainMean">Planted bug (a fault): each frame normalised by its own mean and variance (a plain group
    /// norm) instead of the cumulative statistics over all frames so far.</param>
    public Gemma3nAudioSscpConvBlock(IWeightSource w, string prefix, Gemma3nAudioConfig c, int idx, bool plainMean, MatmulOptions matmul)
    {
        Prefix = prefix;
        int cin = idx == 0 ? 1 : c.SscpConvChannelSize[idx - 1], cout = c.SscpConvChannelSize[idx];
        var (kh, kw) = c.SscpConvKernelSize[idx];
        _conv = Gemma4TowerKernels.Expect(w.Get($"{prefix}.conv.weight"), $"{prefix}.conv.weight", [cout, cin, kh, kw],
            "audio_config.sscp_conv_channel_size, sscp_conv_kernel_size");
        _norm = Gemma4TowerKernels.Expect(w.Get($"{prefix}.norm.weight"), $"{prefix}.norm.weight", [cout], "audio_config.sscp_conv_channel_size");
        _stride = c.SscpConvStrideSize[idx];
        _kernelTime = kh;
        _eps = c.SscpConvGroupNormEps;
        _plainMean = plainMean;
        _matmul = matmul;
    }

    /// <param name="x">[B, T, F, C_in] channels last.</param>
    /// <returns>[B, T_out, F_out, C_out] channels last.</returns>
    public Tensor Forward(Tensor x)
    {
        // F.pad(audio_encodings, (pad_f_left=1, pad_f_right=1, pad_t_top=0, pad_t_bottom=kernel_h - 1)); self.conv(...)
        var y = TowerOps.Conv2dChannelsLast(x, _conv, _stride, (0, _kernelTime - 1, 1, 1), _matmul);
        y = CumulativeGroupNorm(y, _norm, _eps, _plainMean);
        return Activation.Apply(y, ActivationKind.Relu);                                     // self.activation = nn.ReLU()
    }

    /// <summary>
    /// Gemma3nAudioCumulativeGroupNorm.forward (transformers 5.12.1: the mask is all ones), in float32, rounded once to x's
    /// dtype; per batch entry b and frame t over the group G = F * C values of the frame:
    /// <code>
    /// cum_sum_values = cumsum(sum(x_calc, dim=(F, C)), dim=1); cum_count = cumsum(F * C)     # over frames 0..t
    /// cum_mean = cum_sum_values / max(cum_count, 1)
    /// cum_sum_sq_diff = cumsum(sum((x_calc - cum_mean) ** 2, dim=(F, C)), dim=1)          # each frame against ITS cum_mean
    /// cum_variance = cum_sum_sq_diff / max(cum_count, 1)
    /// normalized_x = (x_calc - cum_mean) * rsqrt(cum_variance + eps) * weight[c]
    /// </code>
    /// <paramref name="plainMean"/> is the planted bug: frame t's statistics from frame t alone.
    /// </summary>
    /// <param name="x">[B, T, F, C].</param>
    /// <param name="weight">[C] the scale.</param>
    public static Tensor CumulativeGroupNorm(Tensor x, Tensor weight, double eps, bool plainMean = false)
    {
        int b = x.Size(0), t = x.Size(1), f = x.Size(2), c = x.Size(3), g = f * c;
        var v = x.ToFloatArray();
        var scale = weight.ToFloatArray();
        var y = new float[v.Length];
        for (int bi = 0; bi < b; bi++)
        {
            double cumSum = 0, cumSq = 0, cumCount = 0;                       // torch's CPU cumsum accumulates in double
            for (int ti = 0; ti < t; ti++)
            {
                int row = (bi * t + ti) * g;
                double sum = 0;
                for (int i = 0; i < g; i++) sum += v[row + i];
                float sumAtT = (float)sum;                                     // sum_values_at_t (a float32 tensor)
                if (plainMean) (cumSum, cumCount) = (0, 0);
                cumSum += sumAtT;
                cumCount += g;
                float mean = (float)cumSum / (float)Math.Max(cumCount, 1.0);  // cum_mean (float32)
                double sq = 0;
                for (int i = 0; i < g; i++)
                {
                    float d = v[row + i] - mean;
                    sq += d * d;
                }
                if (plainMean) cumSq = 0;
                cumSq += (float)sq;                                            // cumsum of sum_sq_diff_at_t (float32 values)
                float variance = (float)cumSq / (float)Math.Max(cumCount, 1.0);
                float inv = 1f / MathF.Sqrt(variance + (float)eps);           // torch.rsqrt(cum_variance + self.eps)
                for (int i = 0; i < g; i++) y[row + i] = (v[row + i] - mean) * inv * scale[i % c];
            }
        }
        return Tensor.FromArray(y, b, t, f, c).To(x.DType);                   // final_output.to(input_dtype)
    }
}

/// <summary>
/// Gemma3nAudioAttention (HF 325-551) with Gemma3nAudioRelativePositionEmbedding (155-322), in the model dtype (HF does
/// not upcast q, k, v here, unlike Gemma4):
/// <code>
/// q, k, v = q_proj(x), k_proj(x), v_proj(x) -> [B, T, N, H]                 # nn.Linear, no bias
/// q = q * (H ** -0.5 / softplus(0)) * softplus(per_dim_scale)              # self.q_scale * per_dim_scale_sp_broadcast
/// sin_emb = pos_proj(timing_signal([L, L-1, ..., -R])).reshape(F, N, H)    # F = L + R + 1, L = left - 1, R = right
/// logits = term_ac + _relative_shift(term_bd)                               # UsmLocalAttention
/// logits = tanh(logits / softcap) * softcap; where(valid key and w &lt;= c &lt;= w + L + R, logits, finfo.min)
/// context = softmax(logits, float32).to(dtype) @ values -> [B, T, N, H]
/// </code>
/// </summary>
public sealed class Gemma3nAudioAttention
{
    private readonly Gemma3nAudioConfig _c;
    private readonly Gemma4ClippableLinear _q, _k, _v, _posProj;
    private readonly Tensor _perDimScale;
    private readonly double _qScale;
    private readonly UsmLocalAttention _attention;

    public string Prefix { get; }

    public Gemma3nAudioAttention(IWeightSource w, string prefix, Gemma3nAudioConfig c, bool relShiftSkipped, MatmulOptions matmul)
    {
        Prefix = prefix;
        _c = c;
        _q = Gemma4ClippableLinear.Plain(w, $"{prefix}.q_proj", matmul);
        _k = Gemma4ClippableLinear.Plain(w, $"{prefix}.k_proj", matmul);
        _v = Gemma4ClippableLinear.Plain(w, $"{prefix}.v_proj", matmul);
        _posProj = Gemma4ClippableLinear.Plain(w, $"{prefix}.relative_position_embedding.pos_proj", matmul);
        _perDimScale = Gemma4TowerKernels.Expect(w.Get($"{prefix}.per_dim_scale"), $"{prefix}.per_dim_scale", [c.HeadDim], "audio_config.hidden_size / conf_num_attention_heads");
        // q_scale = head_dim ** -0.5; r_softplus_0 = 1.0 / softplus(tensor(0.0)); buffer (q_scale * r_softplus_0), float32
        _qScale = (float)((float)Math.Pow(c.HeadDim, -0.5) * (float)(1.0 / (float)Math.Log(2.0)));
        _attention = new UsmLocalAttention(c.ConfNumAttentionHeads, c.HeadDim, c.ConfAttentionChunkSize, c.MaxPastHorizon,
            c.ConfAttentionContextRight, c.ConfAttentionLogitCap, matmul) { RelShiftSkipped = relShiftSkipped };
    }

    /// <summary>The blocked mask [B, U, W, C] of this attention for frames marked true at padding.</summary>
    public bool[] BlockedMask(bool[] padding, int b, int t) =>
        // original_valid_mask = ~mask; final_condition = valid key (extracted blocks) and local_causal_valid_mask
        _attention.BlockedMask(padding.Select(p => !p).ToArray(), b, t, _c.MaxPastHorizon, _c.ConfAttentionContextRight);

    /// <param name="x">[B, T, hidden] (the pre-attention norm's output).</param>
    /// <param name="blockMask">[B, U, W, C] from <see cref="BlockedMask"/>.</param>
    /// <returns>[B, T, N*H] (HF's [B, T, N, H] flattened).</returns>
    public Tensor Forward(Tensor x, bool[] blockMask)
    {
        int b = x.Size(0), t = x.Size(1), n = _c.ConfNumAttentionHeads, h = _c.HeadDim;
        var q = _q.Forward(x).Reshape(b, t, n, h);
        var k = _k.Forward(x).Reshape(b, t, n, h);
        var v = _v.Forward(x).Reshape(b, t, n, h);
        // query_states = query_states * self.q_scale * per_dim_scale_sp_broadcast
        q = Elementwise.Mul(Elementwise.Mul(q, _qScale), TowerOps.Softplus(_perDimScale));

        // pos_indices = arange(max_backward, -max_forward - 1, -1); sin_emb = pos_proj(timing_signal).reshape(F, N, H)
        int f = _c.MaxPastHorizon + _c.ConfAttentionContextRight + 1;
        var timing = UsmLocalAttention.TimingSignal(_c.HiddenSize, _c.MaxPastHorizon, f, x.DType);      // [F, hidden]
        var rel = _posProj.Forward(timing).Reshape(f, n, h);                                             // [F, N, H]

        // logits = torch.where(final_condition_for_where, logits, torch.finfo(logits.dtype).min)
        float invalid = x.DType == DType.BFloat16 ? -3.3895313892515355e38f : float.MinValue;
        return _attention.Forward(q, k, v, rel, blockMask, invalid);                                     // [B, T, N*H]
    }
}

/// <summary>
/// Gemma3nAudioConformerBlock (HF 900-924) with its Gemma3nAudioConformerAttention (804-829); g = gradient_clipping:
/// <code>
/// h = ffw_layer_start(h)
/// a = attention.post(attention.attn(attention.pre_attn_norm(clamp(h, -g, g)), mask))      # attention: clamp, norm, attn, post
/// h = h + attention.post_norm(clamp(a, -g, g))
/// h = lconv1d(h * ~mask); h = ffw_layer_end(h)
/// return norm(clamp(h, -g, g))
/// </code>
/// The norms without rms_norm_eps (pre_attn_norm, post_norm, norm) are Gemma3nRMSNorm(hidden) at its default eps 1e-6.
/// </summary>
public sealed class Gemma3nAudioConformerBlock
{
    private readonly Gemma3nAudioConfig _c;
    private readonly Gemma4AudioFeedForward _ffwStart, _ffwEnd;
    private readonly Gemma3nAudioAttention _attn;
    private readonly Gemma4ClippableLinear _post;
    private readonly Gemma4AudioLightConv1d _lconv;
    private readonly Tensor _preAttnNorm, _postNorm, _norm;

    public string Prefix { get; }

    public Gemma3nAudioConformerBlock(IWeightSource w, string prefix, Gemma3nAudioConfig c, Gemma3nOptions options, MatmulOptions matmul)
    {
        Prefix = prefix;
        _c = c;
        // Gemma3n's feed-forward and light conv: the USM parts with plain nn.Linear and silu
        var parts = new UsmConformerParts(c.HiddenSize, c.ConfConvKernelSize, c.ConfResidualWeight, c.GradientClipping, c.RmsNormEps,
            ActivationKind.Silu, name => Gemma4ClippableLinear.Plain(w, name, matmul));
        _ffwStart = new Gemma4AudioFeedForward(w, $"{prefix}.ffw_layer_start", parts);
        _ffwEnd = new Gemma4AudioFeedForward(w, $"{prefix}.ffw_layer_end", parts);
        _attn = new Gemma3nAudioAttention(w, $"{prefix}.attention.attn", c, options.AudioRelShiftSkipped, matmul);
        _post = Gemma4ClippableLinear.Plain(w, $"{prefix}.attention.post", matmul);
        _preAttnNorm = w.Get($"{prefix}.attention.pre_attn_norm.weight");
        _postNorm = w.Get($"{prefix}.attention.post_norm.weight");
        _lconv = new Gemma4AudioLightConv1d(w, $"{prefix}.lconv1d", parts, "audio_config.hidden_size, conf_conv_kernel_size");
        _norm = w.Get($"{prefix}.norm.weight");
    }

    /// <param name="h">[B, T, hidden].</param>
    /// <param name="padding">[B * T] true at padding (the subsampled audio_mel_mask).</param>
    public Tensor Forward(Tensor h, bool[] padding, IActivationSink sink)
    {
        int b = h.Size(0), t = h.Size(1);
        double g = Gemma4AudioFeedForward.Clip(_c.GradientClipping, h.DType);
        h = Step(sink, _ffwStart.Prefix, () => _ffwStart.Forward(h));
        h = Step(sink, $"{Prefix}.attention", () =>
        {
            var normed = Norm(Elementwise.Clamp(h, -g, g), _preAttnNorm);
            var a = Step(sink, _attn.Prefix, () => _attn.Forward(normed, _attn.BlockedMask(padding, b, t)),
                record: y => y.Reshape(b, t, _c.ConfNumAttentionHeads, _c.HeadDim));            // HF's [B, T, N, H]
            a = Elementwise.Clamp(_post.Forward(a), -g, g);
            return Elementwise.Add(h, Norm(a, _postNorm));                                  // audio_encodings_input_to_attn + post_norm(...)
        });
        // audio_encodings * validity_mask_for_lconv.unsqueeze(-1).to(dtype)
        var validity = Tensor.Zeros(h.DType, b, t, 1);
        for (int i = 0; i < b * t; i++) if (!padding[i]) validity.Set(1.0, i / t, i % t, 0);
        var lconvInput = Elementwise.Mul(h, validity);
        h = Step(sink, _lconv.Prefix, () => _lconv.Forward(lconvInput));
        h = Step(sink, _ffwEnd.Prefix, () => _ffwEnd.Forward(h));
        return Step(sink, Prefix, () => Norm(Elementwise.Clamp(h, -g, g), _norm));
    }

    private static Tensor Norm(Tensor x, Tensor weight) =>
        Norms.RmsNorm(x, weight, Gemma4AudioFeedForward.DefaultNormEps, RmsNormKind.GemmaScaled);

    private static Tensor Step(IActivationSink sink, string module, Func<Tensor> body, Func<Tensor, Tensor>? record = null)
    {
        var y = Gemma3nAudioEncoder.Run(module, body);
        if (sink.Wants(module)) sink.Record(module, 0, record?.Invoke(y) ?? y, ShardSpec.Whole);
        return y;
    }
}
