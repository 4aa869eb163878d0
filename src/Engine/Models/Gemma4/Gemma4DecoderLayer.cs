using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// Gemma4TextDecoderLayer: the Gemma sandwich (four RMSNorms), the dense MLP always, with enable_moe_block the router
/// and experts beside it (each with its own norms), the per-layer input (PLE) gate when hidden_size_per_layer_input,
/// and layer_scalar. Rows are tokens of every sequence in the batch, stacked; every op but attention is row-wise.
/// Activations are recorded under HF's module names, [1, rows, ...] as HF's [batch, seq, ...] (the router and experts,
/// which HF runs on the flattened residual, as [rows, ...]).
/// </summary>
public sealed class Gemma4DecoderLayer
{
    private readonly Tensor _inputNorm, _postAttnNorm, _preFfwNorm, _postFfwNorm, _layerScalar;
    private readonly Tensor? _postFfwNorm1, _postFfwNorm2, _preFfwNorm2, _postPleNorm;
    private readonly Linear? _pleGate, _pleProjection;
    private readonly ActivationKind _act;
    private readonly double _eps;
    private readonly ParallelContext _ctx;
    private readonly IActivationSink _sink;

    public string Prefix { get; }
    public int Index { get; }
    public string LayerType { get; }
    public Gemma4Attention SelfAttn { get; }
    public Gemma4Mlp Mlp { get; }
    public Gemma4Router? Router { get; }
    public Gemma4Experts? Experts { get; }

    public Gemma4DecoderLayer(IWeightSource weights, string prefix, Gemma4TextConfig config, int layer, ParallelContext ctx,
        IActivationSink sink, Gemma4Options options)
    {
        Prefix = prefix;
        Index = layer;
        LayerType = config.LayerTypes[layer];
        _ctx = ctx;
        _sink = sink;
        _eps = config.RmsNormEps;
        _act = Activation.Parse(config.HiddenActivation);
        SelfAttn = new Gemma4Attention(weights, prefix + ".self_attn", config, layer, ctx, options.VisionMask);
        Mlp = new Gemma4Mlp(weights, prefix + ".mlp", config, ctx);
        _inputNorm = weights.Get(prefix + ".input_layernorm.weight");
        _postAttnNorm = weights.Get(prefix + ".post_attention_layernorm.weight");
        _preFfwNorm = weights.Get(prefix + ".pre_feedforward_layernorm.weight");
        _postFfwNorm = weights.Get(prefix + ".post_feedforward_layernorm.weight");
        _layerScalar = weights.Get(prefix + ".layer_scalar");
        if (config.EnableMoeBlock)
        {
            Router = new Gemma4Router(weights, prefix + ".router", config);
            Experts = new Gemma4Experts(weights, prefix + ".experts", config, ctx, options);
            _postFfwNorm1 = weights.Get(prefix + ".post_feedforward_layernorm_1.weight");
            _postFfwNorm2 = weights.Get(prefix + ".post_feedforward_layernorm_2.weight");
            _preFfwNorm2 = weights.Get(prefix + ".pre_feedforward_layernorm_2.weight");
        }
        if (config.HiddenSizePerLayerInput > 0)
        {   // replicated on every rank: [hidden] -> [P] -> [hidden], tiny
            _pleGate = new Linear(weights.Get(prefix + ".per_layer_input_gate.weight"));
            _pleProjection = new Linear(weights.Get(prefix + ".per_layer_projection.weight"));
            _postPleNorm = weights.Get(prefix + ".post_per_layer_input_norm.weight");
        }
    }

    /// <param name="h">[rows, hidden]</param>
    /// <param name="perLayerInput">[rows, P] this layer's slice of per_layer_inputs, or null.</param>
    /// <param name="blocks">Per sequence, the bidirectional vision block of each new row (-1: text), or null.</param>
    public Tensor Forward(Tensor h, Tensor? perLayerInput, Tensor cos, Tensor sin, IReadOnlyList<KvCache> caches,
        IReadOnlyList<(int Start, int Count, int Past)> spans, IReadOnlyList<int[]?>? blocks = null)
    {
        // --- attention: h = residual + post_attention_layernorm(self_attn(input_layernorm(h)))
        var residual = h;
        var x = Record(".input_layernorm", Norm(h, _inputNorm));
        var attn = Guard(".self_attn", () => SelfAttn.Forward(x, cos, sin, caches, spans, blocks));
        Record(".self_attn", attn);
        attn = Record(".post_attention_layernorm", Norm(attn, _postAttnNorm));
        h = Elementwise.Add(residual, attn);

        // --- feed-forward: the dense MLP, and beside it the experts (routed on the residual, not on pre_feedforward_layernorm)
        residual = h;
        var m = Record(".mlp", Mlp.Forward(Record(".pre_feedforward_layernorm", Norm(h, _preFfwNorm))));
        if (Experts is not null)
        {
            var m1 = Record(".post_feedforward_layernorm_1", Norm(m, _postFfwNorm1!));
            var (probs, w, idx) = Router!.Forward(residual);                           // router(hidden_states_flat)
            Record(".router", probs, flat: true);
            var xe = Record(".pre_feedforward_layernorm_2", Norm(residual, _preFfwNorm2!), flat: true);
            var m2 = Guard(".experts", () => Experts.Forward(xe, w, idx));              // [rows, hidden]
            Record(".experts", m2, flat: true);
            m2 = Record(".post_feedforward_layernorm_2", Norm(m2, _postFfwNorm2!));
            m = Elementwise.Add(m1, m2);
        }
        h = Elementwise.Add(residual, Record(".post_feedforward_layernorm", Norm(m, _postFfwNorm)));

        // --- per-layer input: h = h + post_per_layer_input_norm(per_layer_projection(act(per_layer_input_gate(h)) * ple_i))
        if (_pleGate is not null)
        {
            if (perLayerInput is null) throw new ArgumentNullException(nameof(perLayerInput), $"{Prefix} needs its per-layer input");
            residual = h;
            var g = Activation.Apply(_pleGate.Forward(h), _act);                       // [rows, P]
            g = Record(".per_layer_projection", _pleProjection!.Forward(Elementwise.Mul(g, perLayerInput)));
            h = Elementwise.Add(residual, Record(".post_per_layer_input_norm", Norm(g, _postPleNorm!)));
        }

        // hidden_states *= self.layer_scalar
        return Record("", Elementwise.Mul(h, _layerScalar));
    }

    private Tensor Norm(Tensor x, Tensor weight) => Norms.RmsNorm(x, weight, _eps, RmsNormKind.GemmaScaled);

    private Tensor Guard(string suffix, Func<Tensor> body)
    {
        try { return body(); }
        catch (Exception e) when (e is not CollectiveException { Failure: CollectiveFailure.PeerFailed } and not ModuleFailedException)
        {
            throw new ModuleFailedException(Prefix + suffix, _ctx.WorldRank, e);
        }
    }

    private Tensor Record(string suffix, Tensor value, bool flat = false)
    {
        string module = Prefix + suffix;
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, flat ? value : value.Unsqueeze(0), ShardSpec.Whole);
        return value;
    }
}
