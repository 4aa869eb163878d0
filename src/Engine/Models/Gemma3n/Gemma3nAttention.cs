using Harness.Engine.Attention;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n;

/// <summary>
/// Gemma3nTextAttention (HF's eager path) under tensor parallelism. q/k/v are column-parallel by heads (kv heads
/// replicated when fewer than tp), then per-head RMSNorms: q_norm and k_norm with a scale, v_norm WITHOUT one; RoPE
/// (this layer type's) on q and k after their norms; attention scaling 1.0 (no 1/sqrt(head_dim)); a causal mask, and
/// for sliding layers also <c>kv_idx &gt; q_idx - sliding_window</c>. A KV-shared layer has no k/v weights: it reads
/// the cache of its source layer (the last non-shared layer of its type), which the source filled this step, and never
/// writes a cache. o_proj is row-parallel (all-reduced). Input [tokens, hidden]; output [tokens, hidden].
/// </summary>
public sealed class Gemma3nAttention
{
    private readonly ColumnParallelLinear? _qOnly;
    private readonly QKVParallelLinear? _qkv;
    private readonly RowParallelLinear _oProj;
    private readonly Tensor _qNorm;
    private readonly Tensor? _kNorm;
    private readonly double _eps;
    private readonly int _heads, _kvHeads, _headDim;
    private readonly AttentionCore _attention;

    public bool IsKvShared { get; }
    public int LocalKvHeads => _kvHeads;

    public Gemma3nAttention(IWeightSource weights, string prefix, Gemma3nTextSettings config, int layer, ParallelContext ctx)
    {
        var b = config.Base;
        int tp = ctx.TpSize;
        IsKvShared = config.KvSourceLayer(layer) != layer;
        _headDim = b.HeadDim;
        _eps = config.RmsNormEps;
        int? window = config.LayerTypes[layer] == "sliding_attention" ? config.SlidingWindow : null;
        if (IsKvShared)
        {
            if (b.NumAttentionHeads % tp != 0)
                throw new ArgumentException($"{prefix}.q_proj: {b.NumAttentionHeads} attention heads are not divisible by the tensor-parallel size {tp}");
            // heads/tp per rank, as QKVParallelLinear splits q; bias=config.attention_bias, as HF builds q_proj
            _qOnly = new ColumnParallelLinear(weights.Get(prefix + ".q_proj.weight"), WeightBias.Load(weights, prefix + ".q_proj", b.AttentionBias),
                ctx.Tp, gatherOutput: false, prefix + ".q_proj");
            _heads = b.NumAttentionHeads / tp;
            _kvHeads = Math.Max(1, b.NumKeyValueHeads / tp);
        }
        else
        {
            _qkv = new QKVParallelLinear(weights, prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj",
                b.NumAttentionHeads, b.NumKeyValueHeads, b.HeadDim, ctx.Tp, bias: b.AttentionBias);
            _heads = _qkv.LocalHeads;
            _kvHeads = _qkv.LocalKvHeads;
            _kNorm = weights.Get(prefix + ".k_norm.weight");
        }
        _qNorm = weights.Get(prefix + ".q_norm.weight");
        _oProj = RowParallelLinear.Load(weights, prefix + ".o_proj", ctx.Tp, inputIsParallel: true, bias: b.AttentionBias);
        // scaling 1.0 (q and k are normed); a sliding layer sees keys j > pos - sliding_window
        _attention = new AttentionCore(new AttentionSpec(_heads, _kvHeads, _headDim, 1.0) { Mask = AttentionMask.Sliding(window) });
    }

    /// <param name="x">[tokens, hidden] (input_layernorm's output)</param>
    /// <param name="cos">[1, tokens, head_dim] of this layer type</param>
    /// <param name="cache">This layer's cache (written), or for a shared layer its source layer's (read only).</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, KvCache cache)
    {
        int t = x.Shape[0], hd = _headDim;
        Tensor q;
        Tensor? k = null, v = null;
        if (_qkv is not null)
        {
            (q, k, v) = _qkv.Forward(x);                                                 // [t, heads*hd], [t, kv*hd] x2
            // key_states = apply_rotary_pos_emb(k_norm(k_proj(x).view(hidden_shape)), cos, sin); v_norm has no scale
            k = Norms.RmsNorm(k.View(t, _kvHeads, hd), _kNorm, _eps, RmsNormKind.GemmaScaled).View(t, _kvHeads * hd);
            v = Norms.RmsNorm(v.View(t, _kvHeads, hd), null, _eps, RmsNormKind.GemmaNoScale).View(t, _kvHeads * hd);
        }
        else q = _qOnly!.Forward(x);                                                    // [t, heads*hd]; the source appended this step's k/v
        // query_states = apply_rotary_pos_emb(q_norm(q_proj(x).view(hidden_shape)), cos, sin)
        q = Norms.RmsNorm(q.View(t, _heads, hd), _qNorm, _eps, RmsNormKind.GemmaScaled).View(t, _heads * hd);
        var output = _attention.Forward(q, k, v, cos, sin, cache, t);                   // [t, heads/tp * hd]; scaling 1.0
        return _oProj.Forward(output);                                                   // [t, hidden]
    }
}
