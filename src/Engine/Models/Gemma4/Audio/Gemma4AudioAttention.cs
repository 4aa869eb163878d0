using Harness.Engine.Models.Common;
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
/// The blocks, the relative shift and the tail are the USM conformer's <see cref="UsmLocalAttention"/>, shared with Gemma3n.
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
    private readonly UsmLocalAttention _attention;

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
        // the scaling is folded into q and k above; the blocked windows, relative positions and the tail are the USM conformer's
        _attention = new UsmLocalAttention(c.NumAttentionHeads, c.HeadDim, c.AttentionChunkSize, c.AttentionContextLeft - 1,
            c.AttentionContextRight, c.AttentionLogitCap, matmul);
    }

    /// <param name="x">[B, T, hidden] in the model dtype.</param>
    /// <param name="positionEmbeddings">[F, hidden] sinusoids (model dtype), F = context_size // 2 + 1.</param>
    /// <param name="blockMask">[B, U, W, C] true where a query may attend to a key (see <see cref="Gemma4AudioModel.BlockedMask"/>).</param>
    public Tensor Forward(Tensor x, Tensor positionEmbeddings, bool[] blockMask)
    {
        int b = x.Size(0), t = x.Size(1), n = _c.NumAttentionHeads, h = _c.HeadDim;

        // query_states = self.q_proj(hidden_states).float().view(hidden_shape) (k, v likewise)
        var q = _q.Forward(x).To(DType.Float32).Reshape(b, t, n, h);
        var k = _k.Forward(x).To(DType.Float32).Reshape(b, t, n, h);
        var v = _v.Forward(x).To(DType.Float32).Reshape(b, t, n, h);

        // query_states = query_states * self.q_scale * F.softplus(self.per_dim_scale); key_states = key_states * self.k_scale
        q = Elementwise.Mul(Elementwise.Mul(q, _qScale), TowerOps.Softplus(_perDimScale).To(DType.Float32));
        k = Elementwise.Mul(k, _kScale);

        // relative_key_states = self.relative_k_proj(position_embeddings).view(-1, N, H).to(float32)
        int f = positionEmbeddings.Size(0);
        var rel = Matmul.Forward(positionEmbeddings, _relativeKT, _matmul).Reshape(f, n, h).To(DType.Float32);      // [F, N, H]

        // the USM blocked attention (matrix_ac + rel_shift(matrix_bd), softcap, mask, softmax, @ value), all in float32,
        // then .reshape(B, U*W, -1)[:, :T] -> model dtype -> post
        var merged = _attention.Forward(q, k, v, rel, blockMask, (float)_c.AttentionInvalidLogitsValue).To(x.DType);   // [B, T, N*H]
        return _post.Forward(merged);
    }
}
