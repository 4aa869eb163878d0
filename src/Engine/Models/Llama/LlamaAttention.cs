using Harness.Engine.Attention;
using Harness.Engine.Distributed;
using Harness.Engine.Models.Common;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// LlamaAttention (HF's eager path) under tensor parallelism: q/k/v from a <see cref="QKVParallelLinear"/> (heads/tp
/// query heads and the rank's kv heads), RoPE, causal grouped-query attention against the KV cache, and o_proj as a
/// <see cref="RowParallelLinear"/> (input_is_parallel; all-reduced, or left partial for a reduce-scatter under SP).
/// Input [tokens, hidden] (full tokens, full width); output [tokens, hidden].
/// </summary>
public sealed class LlamaAttention
{
    private readonly QKVParallelLinear _qkv;
    private readonly RowParallelLinear _oProj;
    private readonly AttentionCore _attention;

    public LlamaAttention(IWeightSource weights, string prefix, Config.TextConfig config, ParallelContext ctx)
    {
        _qkv = new QKVParallelLinear(weights, prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj",
            config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim, ctx.Tp, bias: config.AttentionBias);
        _oProj = RowParallelLinear.Load(weights, prefix + ".o_proj", ctx.Tp, inputIsParallel: true, reduceResults: !ctx.SequenceParallel,
            bias: config.AttentionBias);
        _attention = new AttentionCore(new AttentionSpec(_qkv.LocalHeads, _qkv.LocalKvHeads, config.HeadDim, Math.Pow(config.HeadDim, -0.5)));
    }

    public int LocalKvHeads => _qkv.LocalKvHeads;

    /// <param name="hidden">[tokens, hidden] normed input, all tokens (SP padding included).</param>
    /// <param name="cos">[1, tokens, head_dim]</param>
    /// <param name="realTokens">How many leading tokens are real (the rest is SP padding, kept out of the cache).</param>
    /// <param name="workspace">Host buffers for the projections, the rotated q and the attention output (null: fresh tensors).</param>
    public Tensor Forward(Tensor hidden, Tensor cos, Tensor sin, KvCache cache, int realTokens, DecoderWorkspace? workspace = null)
    {
        int t = hidden.Shape[0];
        long t0 = LlamaProfile.Now();
        var qkvOut = hidden.IsCuda ? null : workspace?.Linear(DecoderWorkspace.Qkv, hidden.DType, t, _qkv.FusedWidth);
        var (q, k, v) = _qkv.Forward(hidden, qkvOut);                     // [t, heads*hd], [t, kv*hd], [t, kv*hd]
        LlamaProfile.Add("self_attn.qkv_proj", t0);
        var attn = _attention.Forward(q, k, v, cos, sin, cache, realTokens, workspace: workspace);   // [t, heads/tp * hd]
        t0 = LlamaProfile.Now();
        var o = _oProj.Forward(attn, attn.IsCuda || !attn.IsContiguous ? null
            : workspace?.Linear(DecoderWorkspace.OProj, attn.DType, t, _oProj.OutFeatures)); // [t, hidden] (partial under SP)
        LlamaProfile.Add("self_attn.o_proj", t0);
        return o;
    }
}
