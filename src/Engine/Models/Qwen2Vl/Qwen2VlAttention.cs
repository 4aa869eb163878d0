using Harness.Engine.Attention;
using Harness.Engine.Distributed;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// Qwen2VLAttention (HF's eager path) under tensor parallelism, as vLLM's Qwen2Attention shards it: q/k/v with bias from a
/// <see cref="QKVParallelLinear"/> (heads/tp query heads, the rank's kv heads), the multimodal RoPE (cos/sin already
/// interleaved from the 3 streams), causal grouped-query attention against the KV cache, o_proj (no bias) as a
/// <see cref="RowParallelLinear"/> (input_is_parallel; all-reduced, or left partial for a reduce-scatter under SP).
/// Input [tokens, hidden] (all tokens, SP padding included); output [tokens, hidden].
/// </summary>
public sealed class Qwen2VlAttention
{
    private readonly QKVParallelLinear _qkv;
    private readonly RowParallelLinear _oProj;
    private readonly AttentionCore _attention;
    private readonly int _hiddenSize;
    private readonly bool _reshapeToHiddenSize;

    public Qwen2VlAttention(IWeightSource weights, string prefix, Qwen2VlConfig config, ParallelContext ctx, Qwen2VlOptions options)
    {
        var text = config.Text;
        _qkv = new QKVParallelLinear(weights, prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj",
            text.NumAttentionHeads, text.NumKeyValueHeads, config.HeadDim, ctx.Tp);
        _oProj = RowParallelLinear.Load(weights, prefix + ".o_proj", ctx.Tp, inputIsParallel: true, reduceResults: !ctx.SequenceParallel);
        _attention = new AttentionCore(new AttentionSpec(_qkv.LocalHeads, _qkv.LocalKvHeads, config.HeadDim, Math.Pow(config.HeadDim, -0.5)));
        _hiddenSize = text.HiddenSize;
        _reshapeToHiddenSize = options.AttentionReshapeHiddenSize;
    }

    public int LocalKvHeads => _qkv.LocalKvHeads;

    /// <param name="hidden">[tokens, hidden] normed input.</param>
    /// <param name="cos">[1, tokens, head_dim], the 3 streams interleaved by mrope_section.</param>
    /// <param name="realTokens">How many leading tokens are real (the rest is SP padding, kept out of the cache).</param>
    public Tensor Forward(Tensor hidden, Tensor cos, Tensor sin, KvCache cache, int realTokens)
    {
        int t = hidden.Shape[0];
        var (q, k, v) = _qkv.Forward(hidden);                             // [t, heads/tp*hd], [t, kv*hd], [t, kv*hd] (+ bias)
        // query_states, key_states = apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section): cos/sin already
        // interleaved, so the standard rotate_half RoPE of the one attention
        var output = _attention.Forward(q, k, v, cos, sin, cache, realTokens);   // [t, heads/tp * hd]
        // attn_output = attn_output.reshape(bsz, q_len, -1): [1, t, heads/tp * hd]. The reported bug viewed it as
        // (bsz, q_len, hidden_size), which only holds at TP=1.
        output = output.Reshape(1, t, _reshapeToHiddenSize ? _hiddenSize : -1);
        return _oProj.Forward(output.Select(0, 0));                        // [t, hidden] (partial under SP)
    }
}
