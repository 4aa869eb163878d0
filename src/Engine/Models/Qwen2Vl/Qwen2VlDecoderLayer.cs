using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Models.Llama;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// Qwen2VLDecoderLayer: h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)), RMSNorm in
/// Llama's form, the SwiGLU MLP of Llama (gate/up merged column-parallel, down row-parallel). Input and output
/// [tokens, hidden] on every rank. Module names are HF's (model.language_model.layers.N...).
/// </summary>
public sealed class Qwen2VlDecoderLayer
{
    private readonly Tensor _inputNorm, _postNorm;
    private readonly double _eps;
    private readonly ParallelContext _ctx;
    private readonly IActivationSink _sink;

    public string Prefix { get; }
    public Qwen2VlAttention SelfAttn { get; }
    public LlamaMlp Mlp { get; }

    public Qwen2VlDecoderLayer(IWeightSource weights, string prefix, Qwen2VlConfig config, ParallelContext ctx, IActivationSink sink, Qwen2VlOptions options)
    {
        Prefix = prefix;
        _ctx = ctx;
        _sink = sink;
        _eps = config.RmsNormEps;
        _inputNorm = weights.Get(prefix + ".input_layernorm.weight");
        _postNorm = weights.Get(prefix + ".post_attention_layernorm.weight");
        SelfAttn = new Qwen2VlAttention(weights, prefix + ".self_attn", config, ctx, options);
        Mlp = new LlamaMlp(weights, prefix + ".mlp", config.Text with { HiddenAct = config.Text.HiddenAct ?? "silu" }, ctx);
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, KvCache cache)
    {
        // hidden_states = self.input_layernorm(hidden_states)
        var normed = Norms.RmsNorm(x, _inputNorm, _eps, RmsNormKind.Llama);
        Capture(".input_layernorm", normed);
        Tensor attn;
        try
        {
            attn = SelfAttn.Forward(normed, cos, sin, cache);                  // [tokens, hidden]
        }
        catch (Exception e) when (e is not CollectiveException { Failure: CollectiveFailure.PeerFailed })
        {
            throw new ModuleFailedException(Prefix + ".self_attn", _ctx.WorldRank, e);
        }
        Capture(".self_attn", attn);
        var h = Elementwise.Add(x, attn);                                      // residual + attn
        var post = Norms.RmsNorm(h, _postNorm, _eps, RmsNormKind.Llama);
        Capture(".post_attention_layernorm", post);
        var mlp = Mlp.Forward(post);                                           // [tokens, hidden]
        Capture(".mlp", mlp);
        var output = Elementwise.Add(h, mlp);
        Capture("", output);
        return output;
    }

    private void Capture(string suffix, Tensor value)
    {
        string module = Prefix + suffix;
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value.Unsqueeze(0), ShardSpec.Whole); // [1, tokens, hidden]
    }
}
