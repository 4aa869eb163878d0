using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Models.Common;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// Qwen2VLDecoderLayer: h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)), RMSNorm in
/// Llama's form, the SwiGLU MLP of Llama (gate/up merged column-parallel, down row-parallel). Module names are HF's
/// (model.language_model.layers.N...).
/// <para>Without sequence parallelism x is [tokens, hidden] on every rank. With it (tokens padded to Tp, a multiple of
/// tp; L = Tp/tp) x is this rank's token chunk [L, hidden], rows [rank*L, (rank+1)*L): the norms run on the chunk, the
/// normed chunk is all-gathered before each column-parallel layer, and each row-parallel output is reduce-scattered
/// back to chunks.</para>
/// </summary>
public sealed class Qwen2VlDecoderLayer
{
    private readonly Tensor _inputNorm, _postNorm;
    private readonly double _eps;
    private readonly ParallelContext _ctx;
    private readonly IActivationSink _sink;
    private int _realTokens;

    public string Prefix { get; }
    public Qwen2VlAttention SelfAttn { get; }
    public ParallelGatedMlp Mlp { get; }

    public Qwen2VlDecoderLayer(IWeightSource weights, string prefix, Qwen2VlConfig config, ParallelContext ctx, IActivationSink sink, Qwen2VlOptions options)
    {
        Prefix = prefix;
        _ctx = ctx;
        _sink = sink;
        _eps = config.RmsNormEps;
        _inputNorm = weights.Get(prefix + ".input_layernorm.weight");
        _postNorm = weights.Get(prefix + ".post_attention_layernorm.weight");
        SelfAttn = new Qwen2VlAttention(weights, prefix + ".self_attn", config, ctx, options);
        Mlp = new ParallelGatedMlp(weights, prefix + ".mlp", ctx, config.Text.MlpBias, config.Text.HiddenAct ?? "silu");
    }

    /// <param name="x">[tokens, hidden], or this rank's chunk [L, hidden] under SP.</param>
    /// <param name="realTokens">Real (unpadded) token count.</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, KvCache cache, int realTokens)
    {
        _realTokens = realTokens;
        // hidden_states = self.input_layernorm(hidden_states)
        var normed = Norms.RmsNorm(x, _inputNorm, _eps, RmsNormKind.Llama);
        Capture(".input_layernorm", normed);
        Tensor attn;
        try
        {
            attn = SelfAttn.Forward(Gather(normed), cos, sin, cache, realTokens);  // [Tp, hidden] (partial under SP)
        }
        catch (Exception e) when (e is not CollectiveException { Failure: CollectiveFailure.PeerFailed })
        {
            throw new ModuleFailedException(Prefix + ".self_attn", _ctx.WorldRank, e);
        }
        attn = Scatter(attn);                                                  // [L or T, hidden]
        Capture(".self_attn", attn);
        var h = Elementwise.Add(x, attn);                                      // hidden_states = residual + hidden_states
        var post = Norms.RmsNorm(h, _postNorm, _eps, RmsNormKind.Llama);
        Capture(".post_attention_layernorm", post);
        var mlp = Scatter(Mlp.Forward(Gather(post)));                          // [L or T, hidden]
        Capture(".mlp", mlp);
        var output = Elementwise.Add(h, mlp);
        Capture("", output);
        return output;
    }

    // SP: every rank's normed chunk, all tokens [Tp, hidden], before a column-parallel layer.
    private Tensor Gather(Tensor local) => _ctx.SequenceParallel ? _ctx.Tp.AllGather(local, 0) : local;

    // SP: the row-parallel partial sums, reduced and scattered to this rank's chunk [L, hidden].
    private Tensor Scatter(Tensor partial) => _ctx.SequenceParallel ? _ctx.Tp.ReduceScatter(partial, 0) : partial;

    private void Capture(string suffix, Tensor value)
    {
        string module = Prefix + suffix;
        if (!_sink.Wants(module)) return;
        int l = value.Shape[0];
        ShardSpec spec = _ctx.SequenceParallel ? new ShardSpec.Rows(_ctx.TpRank * l, l, 1) : ShardSpec.Whole;
        if (!_ctx.SequenceParallel) value = value.Narrow(0, 0, Math.Min(_realTokens, l));
        _sink.Record(module, _ctx.WorldRank, value.Unsqueeze(0), spec);      // [1, tokens, hidden], HF's layout
    }
}
