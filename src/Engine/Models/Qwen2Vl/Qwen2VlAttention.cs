using Harness.Engine.Distributed;
using Harness.Engine.Ops;
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
    private readonly double _scaling;
    private readonly int _hiddenSize;
    private readonly bool _reshapeToHiddenSize;

    public Qwen2VlAttention(IWeightSource weights, string prefix, Qwen2VlConfig config, ParallelContext ctx, Qwen2VlOptions options)
    {
        var text = config.Text;
        _qkv = new QKVParallelLinear(weights, prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj",
            text.NumAttentionHeads, text.NumKeyValueHeads, config.HeadDim, ctx.Tp);
        _oProj = RowParallelLinear.Load(weights, prefix + ".o_proj", ctx.Tp, inputIsParallel: true, reduceResults: !ctx.SequenceParallel);
        _scaling = Math.Pow(config.HeadDim, -0.5);
        _hiddenSize = text.HiddenSize;
        _reshapeToHiddenSize = options.AttentionReshapeHiddenSize;
    }

    public int LocalKvHeads => _qkv.LocalKvHeads;

    /// <param name="hidden">[tokens, hidden] normed input.</param>
    /// <param name="cos">[1, tokens, head_dim], the 3 streams interleaved by mrope_section.</param>
    /// <param name="realTokens">How many leading tokens are real (the rest is SP padding, kept out of the cache).</param>
    public Tensor Forward(Tensor hidden, Tensor cos, Tensor sin, KvCache cache, int realTokens)
    {
        int t = hidden.Shape[0], hd = _qkv.HeadDim, heads = _qkv.LocalHeads, kvHeads = _qkv.LocalKvHeads;
        var (q, k, v) = _qkv.Forward(hidden);                             // [t, heads/tp*hd], [t, kv*hd], [t, kv*hd] (+ bias)
        q = q.View(1, t, heads, hd).Transpose(1, 2);                       // [1, heads, t, hd]
        k = k.View(1, t, kvHeads, hd).Transpose(1, 2);                     // [1, kv, t, hd]
        v = v.View(1, t, kvHeads, hd).Transpose(1, 2);
        // query_states, key_states = apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section)
        q = Rotary.Apply(q, cos, sin);
        k = Rotary.Apply(k, cos, sin);

        int past = cache.Length;
        // Only real tokens enter the cache; SP padding queries see every real key and their outputs are dropped.
        cache.Append(k.Select(0, 0).Narrow(1, 0, realTokens), v.Select(0, 0).Narrow(1, 0, realTokens));
        var (keys, values) = cache.Filled;                                 // [kv, past + real, hd]

        int group = heads / kvHeads;
        var qg = q.Select(0, 0).Reshape(kvHeads, group, t, hd);            // [kv, group, t, hd]
        var kt = keys.Unsqueeze(1).Transpose(-1, -2);                      // [kv, 1, hd, past+t]: repeat_kv by broadcast
        var scores = Elementwise.Mul(Matmul.Forward(qg, kt), _scaling);    // [kv, group, t, past+t]
        var scores32 = scores.To(DType.Float32);                           // softmax(dim=-1, dtype=float32)
        if (scores32.IsCuda) Cuda.CudaOps.MaskFuture(scores32, t, scores32.Shape[3], past);
        else MaskFuture(scores32.Span<float>(), t, scores32.Shape[3], past);
        var probs = Softmax.Forward(scores32, -1).To(hidden.DType);        // .to(query.dtype)
        var output = Matmul.Forward(probs, values.Unsqueeze(1));           // [kv, group, t, hd]
        output = output.Reshape(1, heads, t, hd).Transpose(1, 2);          // [1, t, heads/tp, hd]: attn_output.transpose(1, 2)
        // attn_output = attn_output.reshape(bsz, q_len, -1): [1, t, heads/tp * hd]. The reported bug viewed it as
        // (bsz, q_len, hidden_size), which only holds at TP=1.
        output = output.Reshape(1, t, _reshapeToHiddenSize ? _hiddenSize : -1);
        return _oProj.Forward(output.Select(0, 0));                        // [t, hidden] (partial under SP)
    }

    // Query i (absolute position past + i) sees keys 0..past+i; later keys get -inf before the softmax.
    private static void MaskFuture(Span<float> scores, int t, int s, int past)
    {
        for (int plane = 0; plane < scores.Length; plane += t * s)
            for (int i = 0; i < t; i++)
            {
                int first = past + i + 1;
                if (first < s) scores.Slice(plane + i * s + first, s - first).Fill(float.NegativeInfinity);
            }
    }
}
