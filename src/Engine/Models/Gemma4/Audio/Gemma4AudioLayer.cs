using Harness.Engine.Capture;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4.Audio;

/// <summary>
/// Gemma4AudioLayer (HF modeling_gemma4.py 520-570), a conformer block; g = min(gradient_clipping, finfo(dtype).max):
/// <code>
/// h = feed_forward1(h); r = h
/// h = norm_post_attn(clamp(self_attn(norm_pre_attn(clamp(h, -g, g))), -g, g)) + r
/// h = lconv1d(h); h = feed_forward2(h)
/// h = norm_out(clamp(h, -g, g))
/// </code>
/// The three norms are Gemma4RMSNorm(hidden_size) built WITHOUT eps, so they use the class default 1e-6, not rms_norm_eps
/// (<see cref="Gemma4AudioFeedForward.DefaultNormEps"/>). Records feed_forward1, self_attn, lconv1d, feed_forward2 and the
/// layer's output under "{prefix}.*".
/// </summary>
public sealed class Gemma4AudioLayer
{
    private readonly Gemma4AudioConfig _c;
    private readonly Gemma4AudioFeedForward _ff1, _ff2;
    private readonly Gemma4AudioAttention _attn;
    private readonly Gemma4AudioLightConv1d _lconv;
    private readonly Tensor _normPreAttn, _normPostAttn, _normOut;

    public string Prefix { get; }

    public Gemma4AudioLayer(IWeightSource w, string prefix, Gemma4AudioConfig c, MatmulOptions matmul)
    {
        Prefix = prefix;
        _c = c;
        _ff1 = new Gemma4AudioFeedForward(w, $"{prefix}.feed_forward1", c, matmul);
        _ff2 = new Gemma4AudioFeedForward(w, $"{prefix}.feed_forward2", c, matmul);
        _attn = new Gemma4AudioAttention(w, $"{prefix}.self_attn", c, matmul);
        _lconv = new Gemma4AudioLightConv1d(w, $"{prefix}.lconv1d", c, matmul);
        _normPreAttn = w.Get($"{prefix}.norm_pre_attn.weight");
        _normPostAttn = w.Get($"{prefix}.norm_post_attn.weight");
        _normOut = w.Get($"{prefix}.norm_out.weight");
    }

    public Tensor Forward(Tensor h, Tensor positionEmbeddings, bool[] blockMask, IActivationSink sink)
    {
        double g = Gemma4AudioFeedForward.Clip(_c.GradientClipping, _normPreAttn.DType);

        h = Step(sink, _ff1.Prefix, () => _ff1.Forward(h));
        var residual = h;
        var a = Norm(Elementwise.Clamp(h, -g, g), _normPreAttn);
        a = Step(sink, _attn.Prefix, () => _attn.Forward(a, positionEmbeddings, blockMask));
        h = Elementwise.Add(Norm(Elementwise.Clamp(a, -g, g), _normPostAttn), residual);
        h = Step(sink, _lconv.Prefix, () => _lconv.Forward(h));
        h = Step(sink, _ff2.Prefix, () => _ff2.Forward(h));
        h = Norm(Elementwise.Clamp(h, -g, g), _normOut);
        if (sink.Wants(Prefix)) sink.Record(Prefix, 0, h, ShardSpec.Whole);
        return h;
    }

    private static Tensor Norm(Tensor x, Tensor weight) =>
        Norms.RmsNorm(x, weight, Gemma4AudioFeedForward.DefaultNormEps, RmsNormKind.GemmaScaled);

    private static Tensor Step(IActivationSink sink, string module, Func<Tensor> body)
    {
        var y = Gemma4AudioModel.Run(module, body);
        if (sink.Wants(module)) sink.Record(module, 0, y, ShardSpec.Whole);
        return y;
    }
}

/// <summary>
/// What the USM conformer's feed-forward and light conv read, from Gemma4AudioConfig or Gemma3nAudioConfig: Gemma3n's
/// Gemma3nAudioConformerFeedForward / Gemma3nAudioConformerLightConv1d and Gemma4's Gemma4AudioFeedForward /
/// Gemma4AudioLightConv1d are the same modules (the same weight names under the prefix) but for the linear
/// (Gemma4's clippable one, Gemma3n's plain nn.Linear) and the activation (Gemma4's hidden_act, Gemma3n's silu).
/// </summary>
/// <param name="ResidualWeight">The feed-forward's post_layer_scale (residual_weight / conf_residual_weight).</param>
/// <param name="GradientClipping">The clamp bound (gradient_clipping), before min(., finfo(dtype).max).</param>
/// <param name="RmsNormEps">The light conv's norms' eps (rms_norm_eps).</param>
/// <param name="Act">The feed-forward's and the light conv's activation.</param>
/// <param name="Linear">Builds the linear of a module path ("{prefix}.ffw_layer_1").</param>
public sealed record UsmConformerParts(int HiddenSize, int ConvKernelSize, double ResidualWeight, double GradientClipping, double RmsNormEps,
    ActivationKind Act, Func<string, Gemma4ClippableLinear> Linear)
{
    /// <summary>Gemma4's: clippable linears, hidden_act.</summary>
    public static UsmConformerParts Of(IWeightSource w, Gemma4AudioConfig c, MatmulOptions matmul) =>
        new(c.HiddenSize, c.ConvKernelSize, c.ResidualWeight, c.GradientClipping, c.RmsNormEps, Activation.Parse(c.HiddenAct),
            name => new Gemma4ClippableLinear(w, name, c.UseClippedLinears, matmul));
}

/// <summary>
/// Gemma4AudioFeedForward (HF 405-443) = Gemma3nAudioConformerFeedForward (modeling_gemma3n.py 832-854), the half-step
/// conformer feed-forward:
/// <code>
/// r = h; h = clamp(h, -g, g); h = pre_layer_norm(h)
/// h = ffw_layer_2(act(ffw_layer_1(h)))          # hidden -> 4*hidden -> hidden
/// h = post_layer_norm(clamp(h, -g, g)); h *= residual_weight; h += r      # Gemma3n: residual + (h * post_layer_scale)
/// </code>
/// Both norms are RMSNorm(hidden_size) with the class default eps 1e-6: HF does not pass rms_norm_eps here.
/// </summary>
public sealed class Gemma4AudioFeedForward
{
    private readonly UsmConformerParts _c;
    private readonly Gemma4ClippableLinear _ffw1, _ffw2;
    private readonly Tensor _preNorm, _postNorm;

    public string Prefix { get; }

    public Gemma4AudioFeedForward(IWeightSource w, string prefix, Gemma4AudioConfig c, MatmulOptions matmul)
        : this(w, prefix, UsmConformerParts.Of(w, c, matmul))
    {
    }

    public Gemma4AudioFeedForward(IWeightSource w, string prefix, UsmConformerParts c)
    {
        Prefix = prefix;
        _c = c;
        _ffw1 = c.Linear($"{prefix}.ffw_layer_1");
        _ffw2 = c.Linear($"{prefix}.ffw_layer_2");
        _preNorm = w.Get($"{prefix}.pre_layer_norm.weight");
        _postNorm = w.Get($"{prefix}.post_layer_norm.weight");
    }

    /// <summary>Gemma4RMSNorm's (and Gemma3nRMSNorm's) default eps, used where HF builds the norm without passing rms_norm_eps.</summary>
    public const double DefaultNormEps = 1e-6;

    /// <summary>gradient_clipping = min(self.gradient_clipping, torch.finfo(dtype).max).</summary>
    public static double Clip(double gradientClipping, DType dtype) =>
        Math.Min(gradientClipping, dtype switch { DType.BFloat16 => 3.3895313892515355e38, DType.Float16 => 65504.0, _ => float.MaxValue });

    public Tensor Forward(Tensor h)
    {
        double g = Clip(_c.GradientClipping, h.DType);
        var residual = h;
        h = Norms.RmsNorm(Elementwise.Clamp(h, -g, g), _preNorm, DefaultNormEps, RmsNormKind.GemmaScaled);
        h = _ffw2.Forward(Activation.Apply(_ffw1.Forward(h), _c.Act));
        h = Norms.RmsNorm(Elementwise.Clamp(h, -g, g), _postNorm, DefaultNormEps, RmsNormKind.GemmaScaled);
        h = Elementwise.Mul(h, _c.ResidualWeight);                       // hidden_states *= self.post_layer_scale
        return Elementwise.Add(h, residual);                             // hidden_states += residual
    }
}

/// <summary>
/// Gemma4AudioLightConv1d (HF 476-517) = Gemma3nAudioConformerLightConv1d (modeling_gemma3n.py 857-897):
/// <code>
/// r = h; h = linear_start(pre_layer_norm(h))             # hidden -> 2*hidden
/// h = glu(h, dim=-1)                                     # a * sigmoid(g)
/// h = depthwise_conv1d(h)                                # causal: left pad k-1, groups = hidden, no bias
/// h = linear_end(act(conv_norm(clamp(h, -g, g)))); h += r
/// </code>
/// </summary>
public sealed class Gemma4AudioLightConv1d
{
    private readonly UsmConformerParts _c;
    private readonly Gemma4ClippableLinear _start, _end;
    private readonly Tensor _conv, _preNorm, _convNorm;

    public string Prefix { get; }

    public Gemma4AudioLightConv1d(IWeightSource w, string prefix, Gemma4AudioConfig c, MatmulOptions matmul)
        : this(w, prefix, UsmConformerParts.Of(w, c, matmul), "audio_config.hidden_size, conv_kernel_size")
    {
    }

    /// <param name="fields">The config fields the depthwise kernel's shape comes from (for the shape error).</param>
    public Gemma4AudioLightConv1d(IWeightSource w, string prefix, UsmConformerParts c, string fields)
    {
        Prefix = prefix;
        _c = c;
        _start = c.Linear($"{prefix}.linear_start");
        _end = c.Linear($"{prefix}.linear_end");
        _conv = Gemma4TowerKernels.Expect(w.Get($"{prefix}.depthwise_conv1d.weight"), $"{prefix}.depthwise_conv1d.weight",
            [c.HiddenSize, 1, c.ConvKernelSize], fields);
        _preNorm = w.Get($"{prefix}.pre_layer_norm.weight");
        _convNorm = w.Get($"{prefix}.conv_norm.weight");
    }

    public Tensor Forward(Tensor h)
    {
        var residual = h;
        h = _start.Forward(Norms.RmsNorm(h, _preNorm, _c.RmsNormEps, RmsNormKind.GemmaScaled));   // [B, T, 2*hidden]
        h = TowerOps.Glu(h);                                                            // [B, T, hidden]
        h = TowerOps.DepthwiseCausalConv1d(h, _conv);
        double g = Gemma4AudioFeedForward.Clip(_c.GradientClipping, h.DType);
        h = Norms.RmsNorm(Elementwise.Clamp(h, -g, g), _convNorm, _c.RmsNormEps, RmsNormKind.GemmaScaled);
        h = _end.Forward(Activation.Apply(h, _c.Act));
        return Elementwise.Add(h, residual);
    }
}
