using Harness.Engine.Attention;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4.Audio;

/// <summary>
/// Gemma4AudioAttention (HF modeling_gemma4.py 245-350): chunked local self-attention with a relative-position bias, in float32
/// whatever the model dtype (HF casts q, k, v with .float()). The sequence [T] is cut into U = ceil(T/W) query blocks of
/// W = attention_chunk_size; block u attends to C = W + (left-1) + right keys starting at u*W - (left-1).
/// <code>
/// q = q_proj(x).float() * (hd^-0.5 / ln 2) * softplus(per_dim_scale)      # [B, T, N, H]
/// k = k_proj(x).float() * (ln(1+e) / ln 2);  v = v_proj(x).float()
/// q -> blocks [B, U, W, N, H];  k, v -> context windows [B, U, C, N, H]
/// r = relative_k_proj(pos_emb).view(F, N, H).float()                     # F = C//2 + 1 relative positions
/// ac = q @ k^T                                                            # [B, N, U, W, C]
/// bd = q.reshape(B, N, U*W, H) @ r.permute(1, 2, 0)                       # [B, N, U*W, H] @ [N, H, F]: the 4D x 3D product
/// logits = softcap * tanh((ac + rel_shift(bd)) / softcap), masked_fill(!mask, invalid); softmax in float32
/// out = post((probs @ v) -> [B, U*W, N*H] -> [:, :T] -> model dtype)
/// </code>
/// Every product goes through <see cref="Matmul"/> with the model's <see cref="MatmulOptions"/>: the 4D x 3D one exactly as
/// torch.matmul takes it (ND x ND, the 3D operand broadcast over the batch), which is what vLLM's batch-invariant matmul
/// could not do before its Gemma4-E2B fix. HF's 5D x 5D products (ac, probs @ v) are the same per-element sums as one
/// batched product over the folded batch dims [B*N*U], which is how they are computed here.
/// </summary>
public sealed class Gemma4AudioAttention
{
    private readonly Gemma4AudioConfig _c;
    private readonly Gemma4ClippableLinear _q, _k, _v, _post;
    private readonly Tensor _relativeKT;       // relative_k_proj.weight^T [hidden, N*H]
    private readonly Tensor _perDimScale;      // [H]
    private readonly MatmulOptions _matmul;
    private readonly double _qScale, _kScale;
    private readonly AttentionCore _attention;

    public string Prefix { get; }

    public Gemma4AudioAttention(IWeightSource w, string prefix, Gemma4AudioConfig c, MatmulOptions matmul)
    {
        Prefix = prefix;
        _c = c;
        _matmul = matmul;
        _q = new Gemma4ClippableLinear(w, $"{prefix}.q_proj", c.UseClippedLinears, matmul);
        _k = new Gemma4ClippableLinear(w, $"{prefix}.k_proj", c.UseClippedLinears, matmul);
        _v = new Gemma4ClippableLinear(w, $"{prefix}.v_proj", c.UseClippedLinears, matmul);
        _post = new Gemma4ClippableLinear(w, $"{prefix}.post", c.UseClippedLinears, matmul);
        _relativeKT = w.Get($"{prefix}.relative_k_proj.weight").T();
        _perDimScale = w.Get($"{prefix}.per_dim_scale");
        _qScale = Math.Pow(c.HeadDim, -0.5) / Math.Log(2);   // self.q_scale = (head_dim ** -0.5) / math.log(2)
        _kScale = Math.Log(1 + Math.E) / Math.Log(2);       // self.k_scale = math.log(1 + math.e) / math.log(2)
        // the scaling is folded into q and k above; the blocked windows and relative positions are the tower's own (ContextWindows, RelShift)
        _attention = new AttentionCore(new AttentionSpec(c.NumAttentionHeads, c.NumAttentionHeads, c.HeadDim, 1.0) { Mask = AttentionMask.None, SoftCap = c.AttentionLogitCap });
    }

    /// <param name="x">[B, T, hidden] in the model dtype.</param>
    /// <param name="positionEmbeddings">[F, hidden] sinusoids (model dtype), F = context_size // 2 + 1.</param>
    /// <param name="blockMask">[B, U, W, C] true where a query may attend to a key (see <see cref="Gemma4AudioModel.BlockedMask"/>).</param>
    public Tensor Forward(Tensor x, Tensor positionEmbeddings, bool[] blockMask)
    {
        int b = x.Size(0), t = x.Size(1), n = _c.NumAttentionHeads, h = _c.HeadDim;
        int w = _c.AttentionChunkSize, ctx = _c.ContextSize, u = (t + w - 1) / w, left = _c.AttentionContextLeft - 1;

        // query_states = self.q_proj(hidden_states).float().view(hidden_shape) (k, v likewise)
        var q = _q.Forward(x).To(DType.Float32).Reshape(b, t, n, h);
        var k = _k.Forward(x).To(DType.Float32).Reshape(b, t, n, h);
        var v = _v.Forward(x).To(DType.Float32).Reshape(b, t, n, h);

        // query_states = query_states * self.q_scale * F.softplus(self.per_dim_scale); key_states = key_states * self.k_scale
        q = Elementwise.Mul(Elementwise.Mul(q, _qScale), Gemma4TowerKernels.Softplus(_perDimScale).To(DType.Float32));
        k = Elementwise.Mul(k, _kScale);

        // _convert_to_block / _extract_block_context
        var queries = Gemma4TowerKernels.PadDim1(q, u * w).Reshape(b, u, w, n, h).Permute(0, 3, 1, 2, 4).Contiguous(); // [B, N, U, W, H]
        var keys = ContextWindows(k, u, w, ctx, left);                                                                // [B, N, U, C, H]
        var values = ContextWindows(v, u, w, ctx, left);                                                              // [B, N, U, C, H]

        // relative_key_states = self.relative_k_proj(position_embeddings).view(-1, N, H).to(float32)
        int f = positionEmbeddings.Size(0);
        var rel = Matmul.Forward(positionEmbeddings, _relativeKT, _matmul).Reshape(f, n, h).To(DType.Float32);      // [F, N, H]

        // matrix_ac = queries @ key_states.permute(0, 3, 1, 4, 2): one batched product over [B*N*U]
        var ac = Matmul.Forward(queries.Reshape(b * n * u, w, h), keys.Reshape(b * n * u, ctx, h).Transpose(1, 2), _matmul)
            .Reshape(b, n, u, w, ctx);                                                                                  // [B, N, U, W, C]

        // matrix_bd = queries_flat @ relative_key_states.permute(1, 2, 0): [B, N, U*W, H] @ [N, H, F] (ND x ND, broadcast batch)
        var bd = Matmul.Forward(queries.Reshape(b, n, u * w, h), rel.Permute(1, 2, 0), _matmul);                   // [B, N, U*W, F]
        bd = RelShift(bd.Reshape(b, n, u, w, f), ctx);                                                              // [B, N, U, W, C]

        // attn_weights = tanh((ac + bd) / softcap) * softcap; masked_fill(mask.logical_not(), invalid); softmax(dim=-1, float32)
        var logits = Elementwise.Add(ac, bd);
        // ... then attn_weights @ value_states.permute(0, 3, 1, 2, 4): the one attention's tail over the [B*N*U] folded batch
        var o = _attention.SoftmaxValues(logits, blockMask, b, n, (float)_c.AttentionInvalidLogitsValue, values.Reshape(b * n * u, ctx, h), _matmul)
            .Reshape(b, n, u, w, h);
        // .permute(0, 2, 3, 1, 4).reshape(B, U*W, -1)[:, :T] -> model dtype -> post
        var merged = o.Permute(0, 2, 3, 1, 4).Reshape(b, u * w, n * h).Narrow(1, 0, t).Contiguous().To(x.DType);     // [B, T, N*H]
        return _post.Forward(merged);
    }

    /// <summary>
    /// _extract_block_context: F.pad on time by (left, right + W - 1), unfold(1, C, W), movedim(-1, 2): window u holds positions
    /// u*W - left .. u*W - left + C - 1 (zeros outside [0, T)). [B, T, N, H] -> [B, N, U, C, H].
    /// </summary>
    private static Tensor ContextWindows(Tensor x, int u, int w, int ctx, int left)
    {
        if (x.IsCuda) return Cuda.CudaModelOps.ContextWindows(x, u, w, ctx, left);
        int b = x.Size(0), t = x.Size(1), n = x.Size(2), h = x.Size(3);
        var src = x.Contiguous().Span<float>();
        var dst = new float[b * n * u * ctx * h];
        for (int bi = 0; bi < b; bi++)
        for (int ni = 0; ni < n; ni++)
        for (int ui = 0; ui < u; ui++)
        for (int c = 0; c < ctx; c++)
        {
            int pos = ui * w - left + c;
            if (pos < 0 || pos >= t) continue;
            src.Slice(((bi * t + pos) * n + ni) * h, h).CopyTo(dst.AsSpan((((bi * n + ni) * u + ui) * ctx + c) * h, h));
        }
        return Tensor.FromArray(dst, b, n, u, ctx, h);
    }

    /// <summary>
    /// _rel_shift (Transformer-XL appendix B): pad the last dim of [B, N, U, W, F] with zeros to C + 1, view as
    /// [B, N, U, W*(C+1)], keep the first W*C, view as [B, N, U, W, C].
    /// </summary>
    private static Tensor RelShift(Tensor x, int ctx)
    {
        int b = x.Size(0), n = x.Size(1), u = x.Size(2), w = x.Size(3), f = x.Size(4);
        if (f > ctx + 1) throw new ArgumentException($"rel_shift: {f} relative positions exceed context_size + 1 = {ctx + 1}");
        var padded = Tensor.Cat([x, Tensor.ZerosLike(x, x.DType, b, n, u, w, ctx + 1 - f)], 4);         // [B, N, U, W, C+1]
        return padded.Reshape(b, n, u, w * (ctx + 1)).Narrow(3, 0, w * ctx).Contiguous().Reshape(b, n, u, w, ctx);
    }
}
