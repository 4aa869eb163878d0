using Harness.Engine.Attention;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Common;

/// <summary>
/// The blocked local self-attention with relative positions of Google's USM conformer, as HF ports it twice: Gemma3n's
/// Gemma3nAudioAttention + Gemma3nAudioRelativePositionEmbedding (modeling_gemma3n.py 155-551) and Gemma4's
/// Gemma4AudioAttention (modeling_gemma4.py 245-350), which HF derived from it. What the two share is here, once; each
/// model's attention does its own projections and scalings (Gemma4: float32, a key scale, clippable linears; Gemma3n: the
/// model dtype, plain linears, a sinusoid projected by pos_proj) and calls <see cref="Forward"/>. The sequence [T] is cut into
/// U = ceil(T/W) query blocks of W = chunk; block u attends to the C = W + past + future keys from u*W - past on.
/// <code>
/// queries = _convert_to_block(q)                       # [B, U, W, N, H] -> permute [B, N, U, W, H]
/// keys, values = _extract_block_context(k, v)         # pad (past, future + W - 1), unfold(1, C, W): [B, U, C, N, H]
/// term_ac = queries_p @ keys_p_t                       # [B, N, U, W, C]
/// term_bd = q.reshape(B, N, U*W, H) @ rel.permute(1, 2, 0)   # [B, N, U*W, H] @ [N, H, F] (4D x 3D, broadcast batch)
/// logits = term_ac + _relative_shift(term_bd)          # [B, N, U, W, C]
/// logits = tanh(logits / softcap) * softcap; where(mask, logits, invalid); softmax(float32).to(v.dtype)
/// context = probs @ values -> [B, U*W, N, H][:, :T]
/// </code>
/// Every product goes through <see cref="Matmul"/> with the model's <see cref="MatmulOptions"/>; the tail (cap, mask,
/// softmax, probs @ values) is the one attention's <see cref="AttentionCore.SoftmaxValues"/>.
/// </summary>
public sealed class UsmLocalAttention
{
    private readonly AttentionCore _core;
    private readonly MatmulOptions _matmul;

    public int Heads { get; }
    public int HeadDim { get; }
    /// <summary>W: the query block (attention_chunk_size).</summary>
    public int Chunk { get; }
    /// <summary>The earlier positions a block's keys start at (max_past_horizon = context_left - 1).</summary>
    public int Past { get; }
    /// <summary>The later positions a block's keys reach (max_future_horizon = context_right).</summary>
    public int Future { get; }
    /// <summary>C = W + past + future: keys per query block.</summary>
    public int Context => Chunk + Past + Future;

    /// <summary>
    /// Planted bug (a fault, an explicit input): term_bd padded to C and reshaped without the Transformer-XL skew (the
    /// relative shift left out), so query w reads relative index c instead of c - w (wrong relative positions).
    /// </summary>
    public bool RelShiftSkipped { get; init; }

    public UsmLocalAttention(int heads, int headDim, int chunk, int past, int future, double softCap, MatmulOptions matmul)
    {
        if (chunk < 1) throw new ArgumentException($"attention chunk size must be at least 1, got {chunk}");
        if (past < 0 || future < 0) throw new ArgumentException($"attention context must not be negative (past {past}, future {future})");
        Heads = heads;
        HeadDim = headDim;
        Chunk = chunk;
        Past = past;
        Future = future;
        _matmul = matmul;
        // the scalings are the caller's (folded into q and k); the windows and relative positions are built here
        _core = new AttentionCore(new AttentionSpec(heads, heads, headDim, 1.0) { Mask = AttentionMask.None, SoftCap = softCap });
    }

    /// <param name="q">[B, T, N, H] scaled queries, in the dtype the products run in.</param>
    /// <param name="k">[B, T, N, H] keys (same dtype).</param>
    /// <param name="v">[B, T, N, H] values (same dtype).</param>
    /// <param name="rel">[F, N, H] the projected relative-position sinusoids (same dtype), F &lt;= C + 1.</param>
    /// <param name="visible">[B, U, W, C] true where a query may attend to a key (<see cref="BlockedMask"/>).</param>
    /// <param name="invalid">The logit written where <paramref name="visible"/> is off.</param>
    /// <returns>[B, T, N*H] in the dtype of <paramref name="v"/>.</returns>
    public Tensor Forward(Tensor q, Tensor k, Tensor v, Tensor rel, bool[] visible, float invalid)
    {
        int b = q.Size(0), t = q.Size(1), n = Heads, h = HeadDim, w = Chunk, ctx = Context, u = (t + w - 1) / w;
        // _convert_to_block / _extract_block_context
        var queries = TowerOps.PadDim1(q, u * w).Reshape(b, u, w, n, h).Permute(0, 3, 1, 2, 4).Contiguous();  // [B, N, U, W, H]
        var keys = Windows(k, u);                                                                            // [B, N, U, C, H]
        var values = Windows(v, u);                                                                          // [B, N, U, C, H]

        // term_ac = torch.matmul(queries_p, keys_p_t): one batched product over [B*N*U]
        var ac = Matmul.Forward(queries.Reshape(b * n * u, w, h), keys.Reshape(b * n * u, ctx, h).Transpose(1, 2), _matmul)
            .Reshape(b, n, u, w, ctx);                                                                       // [B, N, U, W, C]
        // term_bd_unshifed_matmul = torch.matmul(q_reshaped, s_permuted): [B, N, U*W, H] @ [N, H, F] (ND x ND, broadcast batch)
        int f = rel.Size(0);
        var bd = Matmul.Forward(queries.Reshape(b, n, u * w, h), rel.Permute(1, 2, 0), _matmul);              // [B, N, U*W, F]
        bd = RelShift(bd.Reshape(b, n, u, w, f), ctx, RelShiftSkipped);                                      // [B, N, U, W, C]
        var logits = Elementwise.Add(ac, bd);                                                                // return term_ac + term_bd_shifted

        // softcap, where(mask, logits, invalid), softmax(float32).to(v.dtype), probs @ values over the folded [B*N*U] batch
        var o = _core.SoftmaxValues(logits, visible, b, n, invalid, values.Reshape(b * n * u, ctx, h), _matmul)
            .Reshape(b, n, u, w, h);                                                                         // [B, N, U, W, H]
        // -> [B, U, W, N, H] -> [B, U*W, N*H][:, :T]
        return o.Permute(0, 2, 3, 1, 4).Reshape(b, u * w, n * h).Narrow(1, 0, t).Contiguous();
    }

    /// <summary>_extract_block_context of [B, T, N, H] in any dtype (the windows are copies: exact). -> [B, N, U, C, H]</summary>
    private Tensor Windows(Tensor x, int u) =>
        TowerOps.ContextWindows(x.To(DType.Float32), u, Chunk, Context, Past).To(x.DType);

    /// <summary>
    /// _relative_shift (Transformer-XL appendix B): pad the last dim of [B, N, U, W, F] with zeros to C + 1, view as
    /// [B, N, U, W*(C+1)], keep the first W*C, view as [B, N, U, W, C]. <paramref name="skipped"/>: the planted bug (pad to
    /// C, no skew).
    /// </summary>
    public static Tensor RelShift(Tensor x, int ctx, bool skipped = false)
    {
        int b = x.Size(0), n = x.Size(1), u = x.Size(2), w = x.Size(3), f = x.Size(4);
        if (f > ctx + 1) throw new ArgumentException($"rel_shift: {f} relative positions exceed context_size + 1 = {ctx + 1}");
        int width = skipped ? Math.Max(ctx, f) : ctx + 1;
        // pad_amount_last_dim = (key_context_size + 1) - max_span_plus_1; nn.functional.pad(term_bd_before_shift, (0, pad))
        var padded = width == f ? x : Tensor.Cat([x, Tensor.ZerosLike(x, x.DType, b, n, u, w, width - f)], 4);   // [B, N, U, W, C+1]
        // .reshape(B, N, U, W*(C+1))[:, :, :, :W*C].reshape(B, N, U, W, C)
        return padded.Reshape(b, n, u, w * width).Narrow(3, 0, w * ctx).Contiguous().Reshape(b, n, u, w, ctx);
    }

    /// <summary>
    /// The blocked mask [B, U, W, C] (true = attend): query q = u*W + w sees key k = u*W - past + c when k is a valid frame
    /// in [0, T), q &lt; T, and q - k lies in [0, <paramref name="maxBack"/>] or k - q in [1, <paramref name="maxForward"/>].
    /// Gemma3n (local_causal_valid_mask: w &lt;= c &lt;= w + past + future) takes maxBack = past, maxForward = future;
    /// Gemma4 (sliding_window_mask_function((left - 1, right))) past - 1 and future - 1. Rows with q &gt;= T are dropped by
    /// the [:, :T] after the product either way.
    /// </summary>
    public bool[] BlockedMask(bool[] valid, int b, int t, int maxBack, int maxForward)
    {
        int w = Chunk, ctx = Context, u = (t + w - 1) / w;
        if (valid.Length != b * t) throw new ArgumentException($"attention mask: {valid.Length} frame flags for {b} x {t} frames");
        var m = new bool[b * u * w * ctx];
        for (int bi = 0; bi < b; bi++)
        for (int ui = 0; ui < u; ui++)
        for (int wi = 0; wi < w; wi++)
        for (int ci = 0; ci < ctx; ci++)
        {
            int q = ui * w + wi, k = ui * w - Past + ci;
            if (q >= t || k < 0 || k >= t || !valid[bi * t + k]) continue;
            int dist = q - k;
            m[((bi * u + ui) * w + wi) * ctx + ci] = dist >= 0 ? dist <= maxBack : -dist <= maxForward;
        }
        return m;
    }

    /// <summary>
    /// The sinusoidal timing signal of positions first, first - 1, ..., first - count + 1 (both ports: num_timescales =
    /// channels // 2, inv_timescales = exp(arange(n) * -ln(1e4) / max(n - 1, 1)) in float32, scaled_time = position *
    /// inv_timescales, cat([sin, cos], -1)), cast to <paramref name="dtype"/>. [count, channels].
    /// </summary>
    public static Tensor TimingSignal(int channels, int first, int count, DType dtype)
    {
        int half = channels / 2;
        float inc = (float)(-Math.Log(10000.0) / Math.Max(half - 1, 1));
        var pe = new float[count * channels];
        for (int r = 0; r < count; r++)
        {
            float p = first - r;
            for (int i = 0; i < half; i++)
            {
                float inv = (float)Math.Exp((float)i * inc);
                float st = p * inv;
                pe[r * channels + i] = (float)Math.Sin(st);
                pe[r * channels + half + i] = (float)Math.Cos(st);
            }
        }
        return Tensor.FromArray(pe, count, channels).To(dtype);
    }
}
