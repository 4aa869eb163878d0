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
    private readonly int? _window;

    public bool IsKvShared { get; }
    public int LocalKvHeads => _kvHeads;

    public Gemma3nAttention(IWeightSource weights, string prefix, Gemma3nTextSettings config, int layer, ParallelContext ctx)
    {
        var b = config.Base;
        int tp = ctx.TpSize;
        IsKvShared = config.KvSourceLayer(layer) != layer;
        _headDim = b.HeadDim;
        _eps = config.RmsNormEps;
        _window = config.LayerTypes[layer] == "sliding_attention" ? config.SlidingWindow : null;
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
    }

    /// <param name="x">[tokens, hidden] (input_layernorm's output)</param>
    /// <param name="cos">[1, tokens, head_dim] of this layer type</param>
    /// <param name="cache">This layer's cache (written), or for a shared layer its source layer's (read only).</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, KvCache cache)
    {
        int t = x.Shape[0], hd = _headDim;
        Tensor q;
        int past;
        if (_qkv is not null)
        {
            var (q0, k, v) = _qkv.Forward(x);                                            // [t, heads*hd], [t, kv*hd] x2
            q = q0;
            // key_states = apply_rotary_pos_emb(k_norm(k_proj(x).view(hidden_shape)), cos, sin); v_norm has no scale
            k = Norms.RmsNorm(k.View(1, t, _kvHeads, hd), _kNorm, _eps, RmsNormKind.GemmaScaled).Transpose(1, 2); // [1, kv, t, hd]
            k = Rotary.Apply(k, cos, sin);
            v = Norms.RmsNorm(v.View(1, t, _kvHeads, hd), null, _eps, RmsNormKind.GemmaNoScale).Transpose(1, 2);
            past = cache.Length;
            cache.Append(k.Select(0, 0), v.Select(0, 0));
        }
        else
        {
            q = _qOnly!.Forward(x);                                                      // [t, heads*hd]
            past = cache.Length - t;                                                     // the source appended this step's tokens
        }
        // query_states = apply_rotary_pos_emb(q_norm(q_proj(x).view(hidden_shape)), cos, sin)
        q = Norms.RmsNorm(q.View(1, t, _heads, hd), _qNorm, _eps, RmsNormKind.GemmaScaled).Transpose(1, 2);  // [1, heads, t, hd]
        q = Rotary.Apply(q, cos, sin);

        var (keys, values) = cache.Filled;                                               // [kv, past + t, hd]
        int group = _heads / _kvHeads;
        var qg = q.Select(0, 0).Reshape(_kvHeads, group, t, hd);                         // [kv, group, t, hd]
        var scores = Matmul.Forward(qg, keys.Unsqueeze(1).Transpose(-1, -2));            // [kv, group, t, past+t]; scaling 1.0
        var scores32 = scores.To(DType.Float32);
        if (scores32.IsCuda) Cuda.CudaModelOps.AttentionMask(scores32, t, scores32.Shape[3], past, _window);
        else Mask(scores32.Span<float>(), t, scores32.Shape[3], past, _window);
        var probs = Softmax.Forward(scores32, -1).To(x.DType);                           // softmax in float32, back to the dtype
        var output = Matmul.Forward(probs, values.Unsqueeze(1));                         // [kv, group, t, hd]
        output = output.Reshape(_heads, t, hd).Transpose(0, 1).Reshape(t, -1);          // [t, heads/tp * hd]: (*input_shape, -1)
        return _oProj.Forward(output);                                                   // [t, hidden]
    }

    // Query i (absolute position past + i) sees key j iff j <= past + i and, in a sliding layer, j > past + i - window.
    private static void Mask(Span<float> scores, int t, int s, int past, int? window)
    {
        for (int plane = 0; plane < scores.Length; plane += t * s)
            for (int i = 0; i < t; i++)
            {
                int pos = past + i;
                var row = scores.Slice(plane + i * s, s);
                for (int j = 0; j < s; j++)
                    if (j > pos || (window is int w && j <= pos - w)) row[j] = float.NegativeInfinity;
            }
    }
}
