using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n;

/// <summary>
/// Gemma3nTextDecoderLayer: AltUp predict, attention and Laurel on the active stream, the MLP, AltUp correct, then the
/// per-layer input (PLE) gated into streams 1..A-1. Streams [A, tokens, hidden] in and out (HF: [A, 1, tokens, hidden]).
/// The per-layer gate and projection are replicated (vLLM: ReplicatedLinear; the per-layer input is not sharded).
/// </summary>
public sealed class Gemma3nDecoderLayer
{
    private readonly Tensor _inputNorm, _postAttnNorm, _preFfNorm, _postFfNorm, _postPleNorm;
    private readonly Linear _pleGate, _pleProjection;
    private readonly ActivationKind _act;
    private readonly double _eps;
    private readonly int _active;
    private readonly bool _correctScale;
    private readonly ParallelContext _ctx;
    private readonly IActivationSink _sink;

    public string Prefix { get; }
    public Gemma3nAttention SelfAttn { get; }
    public Gemma3nMlp Mlp { get; }
    public Gemma3nAltUp AltUp { get; }
    public Gemma3nLaurel Laurel { get; }

    public Gemma3nDecoderLayer(IWeightSource weights, string prefix, Gemma3nTextSettings config, int layer, ParallelContext ctx, IActivationSink sink, Gemma3nOptions? options = null)
    {
        Prefix = prefix;
        _ctx = ctx;
        _sink = sink;
        _eps = config.RmsNormEps;
        _active = config.AltupActiveIdx;
        _correctScale = config.AltupCorrectScale;
        _act = Activation.Parse(config.HiddenActivation);
        _inputNorm = weights.Get(prefix + ".input_layernorm.weight");
        _postAttnNorm = weights.Get(prefix + ".post_attention_layernorm.weight");
        _preFfNorm = weights.Get(prefix + ".pre_feedforward_layernorm.weight");
        _postFfNorm = weights.Get(prefix + ".post_feedforward_layernorm.weight");
        _postPleNorm = weights.Get(prefix + ".post_per_layer_input_norm.weight");
        _pleGate = new Linear(weights.Get(prefix + ".per_layer_input_gate.weight"));
        _pleProjection = new Linear(weights.Get(prefix + ".per_layer_projection.weight"));
        SelfAttn = new Gemma3nAttention(weights, prefix + ".self_attn", config, layer, ctx);
        Mlp = new Gemma3nMlp(weights, prefix + ".mlp", config, layer, ctx, options);
        AltUp = new Gemma3nAltUp(weights, prefix + ".altup", config);
        Laurel = new Gemma3nLaurel(weights, prefix + ".laurel", config, ctx);
    }

    /// <param name="hs">[A, tokens, hidden] streams</param>
    /// <param name="perLayerInput">[tokens, hidden_size_per_layer_input] for this layer</param>
    /// <param name="cache">this layer's KV cache, or its source layer's for a KV-shared layer</param>
    public Tensor Forward(Tensor hs, Tensor cos, Tensor sin, Tensor perLayerInput, KvCache cache)
    {
        // predictions = self.altup.predict(hidden_states); active_prediction = predictions[altup_active_idx]
        var predictions = AltUp.Predict(hs);                                           // [A, t, hidden]
        var active = predictions.Select(0, _active);                                   // [t, hidden]
        var normed = Norm(active, _inputNorm);
        Record(".input_layernorm", normed);
        var laurel = Laurel.Forward(normed);                                           // [t, hidden]
        Record(".laurel", laurel);

        // attn = post_attention_layernorm(self_attn(active_prediction_normed))
        var attn = SelfAttn.Forward(normed, cos, sin, cache);                          // [t, hidden]
        Record(".self_attn", attn);
        attn = Norm(attn, _postAttnNorm);
        Record(".post_attention_layernorm", attn);

        // attn_laurel = (active_prediction + attn + laurel_output) / math.sqrt(2)
        var attnLaurel = Elementwise.Div(Elementwise.Add(Elementwise.Add(active, attn), laurel), Math.Sqrt(2));
        // attn_ffw_laurel_gated = attn_laurel + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(attn_laurel)))
        var ffw = Mlp.Forward(Norm(attnLaurel, _preFfNorm));
        Record(".mlp", ffw);
        ffw = Norm(ffw, _postFfNorm);
        Record(".post_feedforward_layernorm", ffw);
        var corrected = AltUp.Correct(predictions, Elementwise.Add(attnLaurel, ffw));  // [A, t, hidden]

        // first_prediction = per_layer_projection(act(per_layer_input_gate(scale(corrected[active]))) * per_layer_input)
        var first = corrected.Select(0, _active);
        if (_correctScale) first = AltUp.ScaleCorrectedOutput(first);
        first = _pleGate.Forward(first);                                               // [t, P]
        Record(".per_layer_input_gate", first);
        first = Elementwise.Mul(Activation.Apply(first, _act), perLayerInput);
        first = Norm(_pleProjection.Forward(first), _postPleNorm);                     // [t, hidden]
        Record(".post_per_layer_input_norm", first);
        // corrected_predictions[1:] += first_prediction
        var rest = corrected.Narrow(0, 1, corrected.Shape[0] - 1);
        rest.CopyFrom(Elementwise.Add(rest, first.Unsqueeze(0)));
        if (_sink.Wants(Prefix)) _sink.Record(Prefix, _ctx.WorldRank, corrected.Unsqueeze(1), ShardSpec.Whole); // [A, 1, t, hidden]
        return corrected;
    }

    private Tensor Norm(Tensor x, Tensor weight) => Norms.RmsNorm(x, weight, _eps, RmsNormKind.GemmaScaled);

    private void Record(string suffix, Tensor value)
    {
        string module = Prefix + suffix;
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value.Unsqueeze(0), ShardSpec.Whole);   // [1, t, ...]
    }
}
