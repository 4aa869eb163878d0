using Harness.Engine.Models;
using Harness.Engine.Models.Common;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Attention;

/// <summary>
/// What one attention layer computes, beside its projections: heads, grouped-query kv heads, head dim, the score scaling
/// (hd^-0.5, or 1.0 where q/k are normed: Gemma), and which keys a query sees (<see cref="AttentionMask"/>).
/// </summary>
/// <param name="Heads">Query heads on this rank.</param>
/// <param name="KvHeads">Key/value heads on this rank (a divisor of Heads: repeat_kv by index, never copied).</param>
public sealed record AttentionSpec(int Heads, int KvHeads, int HeadDim, double Scaling)
{
    /// <summary>The mask rule (causal by default; a sliding window, vision blocks, or none for the towers).</summary>
    public AttentionMask Mask { get; init; } = AttentionMask.CausalOnly;

    /// <summary>Gemma2-style soft cap on the scaled scores, tanh(s / cap) * cap before the mask; null: none.</summary>
    public double? SoftCap { get; init; }
}

/// <summary>
/// The engine's one attention: HF's <c>eager_attention_forward</c> with vLLM's <c>Attention</c> around it. It applies RoPE,
/// owns the <see cref="KvCache"/> interaction (append, KV sharing: a layer without k/v reads its source's cache) and picks
/// its backend in ONE place (<see cref="Backend"/>):
/// <list type="bullet">
/// <item><c>GraphStep</c>: a CUDA graph decode step (the cache reads its position from the device):
/// rope + append in one kernel, attention at the device position.</item>
/// <item><c>FusedHost</c>: host float32/bfloat16 in normal mode, causal without window, blocks or soft cap: RoPE straight
/// into the cache's next rows (<see cref="Ops.Attention.RopeIntoCache"/>), every head over the cache in place
/// (<see cref="Ops.Attention.CausalInto"/>).</item>
/// <item><c>FusedDevice</c>: on a GPU without vision blocks or soft cap: one kernel (causal or sliding) with the eager
/// path's roundings.</item>
/// <item><c>Eager</c>: everything else (batch-invariant mode, masks with blocks, soft cap): the torch ops of
/// eager_attention_forward, each rounding where torch's does.</item>
/// </list>
/// All four compute, per query row i at absolute position past + i and head h (kv head h / (heads / kv)):
/// <code>
/// s_j = round(round(q . k_j) * scaling)          (scaling 1.0: one rounding)
/// s_j = cap * tanh(s_j / cap)                     (soft cap, when set)
/// p   = round(softmax_fp32(s + mask))             (mask: -inf where AttentionMask says not visible)
/// out = round(sum_j p_j v_j)                      -> [t, heads * hd], HF's transpose(1, 2).reshape(*input_shape, -1)
/// </code>
/// The towers use <see cref="Bidirectional"/> (no cache, no mask), <see cref="SdpaKeyPadding"/> (Gemma4's vision tower,
/// sdpa's numerics) and <see cref="SoftmaxValues"/> (Gemma4's audio tower: logits it built from relative positions).
/// </summary>
public sealed class AttentionCore(AttentionSpec spec)
{
    public AttentionSpec Spec { get; } = spec;

    /// <summary>The backends, chosen by <see cref="Backend"/> alone.</summary>
    public enum Kind { GraphStep, FusedHost, FusedDevice, Eager }

    /// <summary>The one place a backend is chosen, from the tensors and the spec.</summary>
    public Kind Backend(Tensor q, Tensor? k, Tensor cos, KvCache cache, int realTokens, int[]? blocks)
    {
        int t = q.Shape[0];
        bool plain = blocks is null && Spec.SoftCap is null;
        var ops = OpBackend.Of(q);
        if (ops.DecodesAtDevicePosition && cache.DevicePosition is not null && k is not null && realTokens == t && cos.IsContiguous && cos.DType == q.DType && plain)
            return Kind.GraphStep;
        if (Ops.Attention.Supports(q) && cos.DType == q.DType && OpBackend.OnHost(cache.Keys) && plain && Spec.Mask.IsPlainCausal)
            return Kind.FusedHost;
        if (ops.FusesCausalAttention && plain && Spec.Mask.Causal) return Kind.FusedDevice;
        return Kind.Eager;
    }

    /// <summary>
    /// One decoder step of one sequence: RoPE on q and k, k and v into the cache (only the first
    /// <paramref name="realTokens"/>: SP padding rows see every real key and their outputs are dropped), attention over it.
    /// </summary>
    /// <param name="q">[t, heads*hd] before RoPE (rows contiguous).</param>
    /// <param name="k">[t, kv*hd] before RoPE, or null for a KV-shared layer (its source filled the cache this step).</param>
    /// <param name="v">[t, kv*hd], or null with k.</param>
    /// <param name="cos">[1, t, hd] (or [t, hd]) of these positions.</param>
    /// <param name="blocks">Each new row's vision block (-1: text), or null (<see cref="AttentionMask"/>).</param>
    /// <param name="workspace">Host buffers for the rotated q and the output (null: fresh tensors).</param>
    /// <returns>[t, heads*hd]</returns>
    public Tensor Forward(Tensor q, Tensor? k, Tensor? v, Tensor cos, Tensor sin, KvCache cache, int realTokens, int[]? blocks = null,
        DecoderWorkspace? workspace = null)
    {
        int t = q.Shape[0], hd = Spec.HeadDim, heads = Spec.Heads, kvHeads = Spec.KvHeads;
        if ((k is null) != (v is null)) throw new ArgumentException("attention: k and v come together (both null: KV shared)");
        var backend = Backend(q, k, cos, cache, realTokens, blocks);
        var ops = OpBackend.Of(q);
        if (backend == Kind.FusedHost) return FusedHost(q, k, v, cos, sin, cache, realTokens, workspace);

        var q4 = q.View(1, t, heads, hd).Transpose(1, 2);                              // [1, heads, t, hd]
        if (backend == Kind.GraphStep)
        {   // a graph step (CudaGraphDecoder): rope of q and k and the cache append in one kernel, attention at the
            // device's position; the same arithmetic as the eager lines below
            if (cache.Length + t > cache.Capacity) throw new InvalidOperationException($"KV cache of {cache.Capacity} positions cannot take {t} more after {cache.Length}");
            var devicePos = cache.DevicePosition!;
            var k4 = k!.View(1, t, kvHeads, hd).Transpose(1, 2);
            var v4 = v!.View(1, t, kvHeads, hd).Transpose(1, 2);
            var qr = ops.RopeAppendAt(q4.Select(0, 0), k4.Select(0, 0), v4.Select(0, 0), cos, sin, cache.Keys, cache.Values, devicePos); // [heads, t, hd]
            var attn = ops.AttentionAt(qr, cache.Keys, cache.Values, devicePos, Spec.Mask.Window ?? 0, (float)Spec.Scaling);
            cache.Advance(t);
            return ToRows(attn, heads, t, hd);
        }

        // query_states = apply_rotary_pos_emb(q, cos, sin); keys likewise, then into the cache (real tokens only)
        q4 = Rotary.Apply(q4, cos, sin);
        int past;
        if (k is not null)
        {
            var kr = Rotary.Apply(k.View(1, t, kvHeads, hd).Transpose(1, 2), cos, sin);  // [1, kv, t, hd]
            var vr = v!.View(1, t, kvHeads, hd).Transpose(1, 2);
            past = cache.Length;
            cache.Append(kr.Select(0, 0).Narrow(1, 0, realTokens), vr.Select(0, 0).Narrow(1, 0, realTokens));
        }
        else past = cache.Length - t;                                                    // the source appended this step's tokens
        var (keys, values) = cache.Filled;                                               // [kv, past + real, hd]

        Tensor output;
        if (ops.DecodesAtDevicePosition && cache.DevicePosition is { } pos)              // a graph step that is not plain (blocks, cap): past from the device
            output = ops.AttentionAt(q4.Select(0, 0), cache.Keys, cache.Values, pos, Spec.Mask.Window ?? 0, (float)Spec.Scaling);
        else if (backend == Kind.FusedDevice)                                            // one kernel with the eager path's roundings
            output = ops.CausalAttention(q4.Select(0, 0), keys, values, past, Spec.Mask.Window ?? 0, (float)Spec.Scaling); // [heads, t, hd]
        else output = Eager(q4.Select(0, 0), keys, values, past, q.DType, blocks);      // [kv, group, t, hd]
        return ToRows(output, heads, t, hd);
    }

    // [heads, t, hd] (or [kv, group, t, hd]) -> [t, heads*hd]: attn_output.transpose(1, 2).reshape(*input_shape, -1)
    private static Tensor ToRows(Tensor o, int heads, int t, int hd) => o.Reshape(heads, t, hd).Transpose(0, 1).Reshape(t, -1);

    // The host's normal-mode path: RoPE from the projections' views straight into q's buffer and the cache's next rows,
    // then every head's causal attention over the cache written as [t, heads*hd]. The same arithmetic as Eager (the dot
    // products and sums in the fused kernel's order).
    private Tensor FusedHost(Tensor q, Tensor? k, Tensor? v, Tensor cos, Tensor sin, KvCache cache, int realTokens, DecoderWorkspace? ws)
    {
        int t = q.Shape[0], width = q.Shape[1];
        long t0 = Models.Llama.LlamaProfile.Now();
        var qr = ws?.Get(DecoderWorkspace.Query, q.DType, t, width) ?? Tensor.Zeros(q.DType, t, width);     // [t, heads*hd]
        int past;
        if (k is not null)
        {
            past = cache.Length;
            Ops.Attention.RopeIntoCache(q, k, v!, cos, sin, qr, cache.Keys, cache.Values, past, realTokens);
            cache.Advance(realTokens);
        }
        else
        {   // KV shared: only q to rotate
            past = cache.Length - t;
            qr.CopyFrom(Rotary.Apply(q.View(1, t, Spec.Heads, Spec.HeadDim).Transpose(1, 2), cos, sin).Select(0, 0).Transpose(0, 1).Reshape(t, width));
        }
        Models.Llama.LlamaProfile.Add("self_attn.rope_into_cache", t0);
        t0 = Models.Llama.LlamaProfile.Now();
        var output = ws?.Get(DecoderWorkspace.AttnOut, q.DType, t, width) ?? Tensor.Zeros(q.DType, t, width); // [t, heads*hd]
        Ops.Attention.CausalInto(qr, cache.Keys, cache.Values, past, cache.Length, (float)Spec.Scaling, output);
        Models.Llama.LlamaProfile.Add("self_attn.attention", t0);
        return output;
    }

    // HF's eager_attention_forward: q [heads, t, hd], keys/values [kv, s, hd] -> [kv, group, t, hd].
    private Tensor Eager(Tensor q, Tensor keys, Tensor values, int past, DType dtype, int[]? blocks)
    {
        int heads = q.Shape[0], t = q.Shape[1], hd = q.Shape[2], kvHeads = keys.Shape[0], group = heads / kvHeads;
        var qg = q.Reshape(kvHeads, group, t, hd);                                     // [kv, group, t, hd]
        var kt = keys.Unsqueeze(1).Transpose(-1, -2);                                  // [kv, 1, hd, s]: repeat_kv by broadcast
        var scores = Matmul.Forward(qg, kt);                                           // [kv, group, t, s]
        if (Spec.Scaling != 1.0) scores = Elementwise.Mul(scores, Spec.Scaling);       // attn_weights * scaling (1.0: exact, skipped)
        var scores32 = scores.To(DType.Float32).Contiguous();                          // softmax(dim=-1, dtype=float32)
        if (Spec.SoftCap is double cap) scores32 = Elementwise.Mul(Elementwise.Tanh(Elementwise.Div(scores32, cap)), cap);
        Spec.Mask.Apply(scores32, t, scores32.Shape[3], past, blocks);
        var probs = Softmax.Forward(scores32, -1).To(dtype);                           // .to(query.dtype)
        return Matmul.Forward(probs, values.Unsqueeze(1));                             // [kv, group, t, hd]
    }

    /// <summary>
    /// Bidirectional attention without a cache (Qwen2-VL's vision blocks, one frame's segment at a time): q, k, v
    /// [heads, n, hd] (rotated by the caller's 2-D RoPE) -> [heads, n, hd], eager numerics (scores scaled and rounded to
    /// the dtype, float32 softmax rounded back, probs @ v).
    /// </summary>
    public Tensor Bidirectional(Tensor q, Tensor k, Tensor v)
    {
        var scores = Matmul.Forward(q, k.Transpose(-1, -2));                          // [heads, n, n]
        if (Spec.Scaling != 1.0) scores = Elementwise.Mul(scores, Spec.Scaling);
        var probs = Softmax.Forward(scores.To(DType.Float32), -1).To(q.DType);
        return Matmul.Forward(probs, v);                                               // [heads, n, hd]
    }

    /// <summary>
    /// torch's sdpa as its CPU flash kernel computes it, with a key padding mask (Gemma4's vision tower; Gemma3n's
    /// MobileNetV5 multi-query attention, one kv head over M = N / kv_stride^2 keys, no padding): q [B, heads, N, hd],
    /// k [B, kv, M, hd], v [B, kv, M, vd] in the model dtype; float32 scores (times scaling), -inf at padded keys, e = exp(s - max) and its
    /// sum in float32, e rounded to the dtype for the product with v (float32 accumulation), divided by the sum; the output
    /// float32 [B, heads, N, vd] (the caller rounds it once).
    /// </summary>
    /// <param name="keyPadding">[B, 1, 1, M] bool, true where the key is padding.</param>
    public Tensor SdpaKeyPadding(Tensor q, Tensor k, Tensor v, Tensor keyPadding, MatmulOptions matmul)
    {
        int b = q.Size(0), heads = q.Size(1), hd = q.Size(3), kv = k.Size(1), group = heads / kv, m = k.Size(2), vd = v.Size(3);
        var qf = q.To(DType.Float32);
        var kf = k.To(DType.Float32).Unsqueeze(2).Expand(b, kv, group, m, hd).Reshape(b, heads, m, hd);   // repeat_kv
        var vf = v.To(DType.Float32).Unsqueeze(2).Expand(b, kv, group, m, vd).Reshape(b, heads, m, vd);
        var scores = Matmul.Forward(qf, kf.Transpose(2, 3), matmul);                  // [B, heads, N, M]
        if (Spec.Scaling != 1.0) scores = Elementwise.Mul(scores, Spec.Scaling);
        scores = Elementwise.Where(keyPadding, Tensor.Scalar(double.NegativeInfinity), scores);
        var e = Elementwise.Exp(Elementwise.Sub(scores, Reductions.Amax(scores, -1, keepDim: true)));
        var sum = Reductions.Sum(e, -1, keepDim: true);                               // [B, heads, N, 1]
        var o = Matmul.Forward(e.To(q.DType).To(DType.Float32), vf, matmul);          // [B, heads, N, vd]
        return Elementwise.Div(o, sum);
    }

    /// <summary>
    /// The tail of attention from logits a tower built itself (the USM conformer's blocked windows with relative positions,
    /// <see cref="Models.Common.UsmLocalAttention"/>: Gemma4's audio tower in float32, Gemma3n's in the model dtype): soft cap
    /// tanh(x / cap) * cap (<see cref="AttentionSpec.SoftCap"/>) in the logits' dtype (each op rounded to it, as torch does),
    /// then masked_fill(!visible, <paramref name="invalid"/>) broadcast over <paramref name="broadcastOver"/> planes and
    /// softmax in float32 (HF: <c>softmax(logits, dim=-1, dtype=torch.float32).to(dtype=value_blocks.dtype)</c>), the
    /// probabilities rounded to the values' dtype, and probs @ values over the folded batch.
    /// </summary>
    /// <param name="logits">[..., rows, keys] in any float dtype; planes of [per] elements.</param>
    /// <param name="visible">One flag per element of one batch entry's plane set: [B, per].</param>
    /// <param name="values">[batch*planes, keys, hd] matching logits' folded batch.</param>
    public Tensor SoftmaxValues(Tensor logits, bool[] visible, int batch, int broadcastOver, float invalid, Tensor values, MatmulOptions matmul)
    {
        if (Spec.SoftCap is double cap) logits = Elementwise.Mul(Elementwise.Tanh(Elementwise.Div(logits, cap)), cap);
        logits = AttentionMask.MaskedFill(logits.To(DType.Float32), visible, batch, broadcastOver, invalid);   // exact: float32 holds every bf16
        var probs = Softmax.Forward(logits, -1).To(values.DType);
        int keys = logits.Size(-1), rows = logits.Size(-2), folded = (int)(logits.NumEl / ((long)rows * keys));
        return Matmul.Forward(probs.Reshape(folded, rows, keys), values, matmul);
    }
}
