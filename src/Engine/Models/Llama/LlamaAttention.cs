using Harness.Engine.Distributed;
using Harness.Engine.Models.Common;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Engine.Ops;

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
    private readonly double _scaling;

    public LlamaAttention(IWeightSource weights, string prefix, Config.TextConfig config, ParallelContext ctx)
    {
        _qkv = new QKVParallelLinear(weights, prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj",
            config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim, ctx.Tp, bias: config.AttentionBias);
        _oProj = RowParallelLinear.Load(weights, prefix + ".o_proj", ctx.Tp, inputIsParallel: true, reduceResults: !ctx.SequenceParallel,
            bias: config.AttentionBias);
        _scaling = Math.Pow(config.HeadDim, -0.5);
    }

    public int LocalKvHeads => _qkv.LocalKvHeads;

    /// <param name="hidden">[tokens, hidden] normed input, all tokens (SP padding included).</param>
    /// <param name="cos">[1, tokens, head_dim]</param>
    /// <param name="realTokens">How many leading tokens are real (the rest is SP padding, kept out of the cache).</param>
    /// <param name="workspace">Host buffers for the rotated q and the attention output (null: fresh tensors).</param>
    public Tensor Forward(Tensor hidden, Tensor cos, Tensor sin, KvCache cache, int realTokens, DecoderWorkspace? workspace = null)
    {
        int t = hidden.Shape[0], hd = _qkv.HeadDim, heads = _qkv.LocalHeads, kvHeads = _qkv.LocalKvHeads;
        long t0 = LlamaProfile.Now();
        var qkvOut = hidden.IsCuda ? null : workspace?.Linear(DecoderWorkspace.Qkv, hidden.DType, t, _qkv.FusedWidth);
        var (q, k, v) = _qkv.Forward(hidden, qkvOut);                     // [t, heads*hd], [t, kv*hd], [t, kv*hd]
        LlamaProfile.Add("self_attn.qkv_proj", t0);
        if (Ops.Attention.Supports(q) && cos.DType == q.DType && !cache.Keys.IsCuda)
        {
            var attn = Fused(q, k, v, cos, sin, cache, realTokens, workspace);
            t0 = LlamaProfile.Now();
            var o = _oProj.Forward(attn, workspace?.Linear(DecoderWorkspace.OProj, attn.DType, t, _oProj.OutFeatures)); // [t, hidden] (partial under SP)
            LlamaProfile.Add("self_attn.o_proj", t0);
            return o;
        }
        q = q.View(1, t, heads, hd).Transpose(1, 2);                       // [1, heads, t, hd]
        k = k.View(1, t, kvHeads, hd).Transpose(1, 2);                     // [1, kv, t, hd]
        v = v.View(1, t, kvHeads, hd).Transpose(1, 2);
        if (q.IsCuda && cache.DevicePosition is { } devicePos && realTokens == t && cos.IsContiguous && cos.DType == q.DType)
        {   // a graph step (LlamaCudaGraphDecoder): rope of q and k and the cache append in one kernel, attention at the
            // device's position; the same arithmetic as the lines below
            if (cache.Length + t > cache.Capacity) throw new InvalidOperationException($"KV cache of {cache.Capacity} positions cannot take {t} more after {cache.Length}");
            var (allK, allV) = (cache.Keys, cache.Values);
            var qr = Cuda.CudaDecodeOps.RopeAppendAt(q.Select(0, 0), k.Select(0, 0), v.Select(0, 0), cos, sin, allK, allV, devicePos); // [heads, t, hd]
            var attn = Cuda.CudaDecodeOps.AttentionAt(qr, allK, allV, devicePos, 0, (float)_scaling);      // [heads, t, hd]
            cache.Advance(t);
            return _oProj.Forward(attn.Reshape(heads, t, hd).Transpose(0, 1).Reshape(t, -1));
        }
        q = Rotary.Apply(q, cos, sin);
        k = Rotary.Apply(k, cos, sin);

        // Only real tokens enter the cache; keys and values are views of it, never copied. SP padding rows (queries
        // after the real tokens) see every real key and their outputs are dropped, so they need no keys of their own.
        int past = cache.Length;
        cache.Append(k.Select(0, 0).Narrow(1, 0, realTokens), v.Select(0, 0).Narrow(1, 0, realTokens));
        var (keys, values) = cache.Filled;                                 // [kv, past + real, hd]

        // on a GPU: one fused kernel (CudaOps.Attention) with the eager path's roundings (scores rounded to the dtype,
        // scaled and rounded, causal mask, float32 softmax rounded to the dtype, probs @ values in float32)
        var output = q.IsCuda && cache.DevicePosition is { } pos                                  // a graph step: past from the device
            ? Cuda.CudaDecodeOps.AttentionAt(q.Select(0, 0), cache.Keys, cache.Values, pos, 0, (float)_scaling)
            : q.IsCuda
            ? Cuda.CudaOps.Attention(q.Select(0, 0), keys, values, past, 0, (float)_scaling)   // [heads, t, hd]
            : Eager(q, keys, values, past, hidden.DType);                                         // [kv, group, t, hd]
        output = output.Reshape(heads, t, hd).Transpose(0, 1).Reshape(t, -1); // [t, heads/tp * hd]: (*input_shape, -1)
        return _oProj.Forward(output);                                     // [t, hidden] (partial under SP)
    }

    // The host's normal-mode path: RoPE from the qkv output's views straight into q's buffer and the cache's next rows,
    // then every head's causal attention over the cache written as [t, heads*hd] (Ops.Attention). The same arithmetic as
    // the lines above and Eager below (the dot products and sums in the fused kernel's order).
    private Tensor Fused(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, KvCache cache, int realTokens, DecoderWorkspace? ws)
    {
        int t = q.Shape[0], width = q.Shape[1];
        int past = cache.Length;
        long t0 = LlamaProfile.Now();
        var qr = ws?.Get(DecoderWorkspace.Query, q.DType, t, width) ?? Tensor.Zeros(q.DType, t, width);     // [t, heads*hd]
        Ops.Attention.RopeIntoCache(q, k, v, cos, sin, qr, cache.Keys, cache.Values, past, realTokens);
        cache.Advance(realTokens);
        LlamaProfile.Add("self_attn.rope_into_cache", t0);
        t0 = LlamaProfile.Now();
        var output = ws?.Get(DecoderWorkspace.AttnOut, q.DType, t, width) ?? Tensor.Zeros(q.DType, t, width); // [t, heads*hd]
        Ops.Attention.CausalInto(qr, cache.Keys, cache.Values, past, cache.Length, (float)_scaling, output);
        LlamaProfile.Add("self_attn.attention", t0);
        return output;
    }

    // HF's eager_attention_forward: q [1, heads, t, hd], keys/values [kv, s, hd] views of the cache -> [kv, group, t, hd].
    private Tensor Eager(Tensor q, Tensor keys, Tensor values, int past, DType dtype)
    {
        int heads = q.Shape[1], t = q.Shape[2], hd = q.Shape[3], kvHeads = keys.Shape[0], group = heads / kvHeads;
        var qg = q.Select(0, 0).Reshape(kvHeads, group, t, hd);            // [kv, group, t, hd]
        var kt = keys.Unsqueeze(1).Transpose(-1, -2);                      // [kv, 1, hd, past+real]: repeat_kv by broadcast
        var scores = Elementwise.Mul(Matmul.Forward(qg, kt), _scaling);    // [kv, group, t, past+real]
        var scores32 = scores.To(DType.Float32);                           // HF: softmax in float32 (a fresh tensor either way)
        MaskFuture(scores32.Span<float>(), t, scores32.Shape[3], past);
        var probs = Softmax.Forward(scores32, -1).To(dtype);               // ... then back to the model dtype
        return Matmul.Forward(probs, values.Unsqueeze(1));                 // [kv, group, t, hd]
    }

    // Query i (absolute position past + i) sees keys 0..past+i: later keys get -inf before the softmax (HF adds the
    // dtype's minimum in the model dtype; both give exactly 0 after the float32 softmax). scores: [planes, t, s] flat.
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
