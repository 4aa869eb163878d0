using Harness.Engine.Attention;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// Gemma4TextAttention (HF's eager path) under tensor parallelism, for a batch of sequences stacked as rows.
/// <code>
///   q = rope(q_norm(q_proj(x)))                    q_proj column-parallel by heads: rank r has heads/tp heads
///   k = rope(k_norm(k_proj(x)))                    k_proj by kv heads (replicated when kv_heads &lt; tp)
///   v = v_norm(v_proj(x))   or, k=v layers,  v = v_norm(k_proj(x))   (before k_norm and RoPE)
///   o = o_proj(softmax(q k^T * 1.0 + mask) v)      o_proj row-parallel (input_is_parallel), all-reduced
/// </code>
/// Sliding layers use head_dim and a window (key j visible to query i iff i - W &lt; j &lt;= i), full layers
/// global_head_dim. A KV-shared layer has only q_proj, q_norm and o_proj: it reads the cache of the last non-shared
/// layer of its type (after that layer's update), with its own mask and the same-type RoPE.
/// </summary>
public sealed class Gemma4Attention
{
    private readonly Linear _q;
    private readonly Linear? _k, _v;
    private readonly RowParallelLinear _o;
    private readonly Tensor _qNorm;
    private readonly Tensor? _kNorm;
    private readonly double _eps;
    private readonly AttentionCore _attention;

    public int LocalHeads { get; }
    public int LocalKvHeads { get; }
    public int HeadDim { get; }
    public bool IsKvShared { get; }

    /// <param name="visionMask">Which rule lets a vision block's tokens see each other (<see cref="Gemma4VisionMask"/>).</param>
    public Gemma4Attention(IWeightSource weights, string prefix, Gemma4TextConfig config, int layer, ParallelContext ctx,
        Gemma4VisionMask visionMask = Gemma4VisionMask.SlidingLayersOnly)
    {
        int tp = ctx.TpSize, r = ctx.TpRank;
        int heads = config.NumAttentionHeads, kvHeads = config.LayerKvHeads(layer);
        HeadDim = config.LayerHeadDim(layer);
        if (heads % tp != 0)
            throw new ArgumentException($"{prefix}: {heads} attention heads are not divisible by the tensor-parallel size {tp}");
        if (kvHeads >= tp ? kvHeads % tp != 0 : tp % kvHeads != 0)
            throw new ArgumentException($"{prefix}: {kvHeads} kv heads cannot be split or replicated over tensor-parallel size {tp}");
        LocalHeads = heads / tp;
        LocalKvHeads = Math.Max(1, kvHeads / tp);
        int kvStart = kvHeads >= tp ? r * LocalKvHeads : r * kvHeads / tp;
        IsKvShared = config.IsKvSharedLayer(layer);
        _eps = config.RmsNormEps;
        // scaling 1.0; sliding layers see keys j > pos - sliding_window; vision blocks per the environment's rule
        _attention = new AttentionCore(new AttentionSpec(LocalHeads, LocalKvHeads, HeadDim, 1.0)
        {
            Mask = AttentionMask.Sliding(config.IsSliding(layer) ? config.SlidingWindow : null, visionMask == Gemma4VisionMask.SlidingLayersOnly),
        });

        bool bias = config.AttentionBias;                                       // HF: nn.Linear(..., bias=config.attention_bias)
        _q = Rows(weights, prefix + ".q_proj", r * LocalHeads * HeadDim, LocalHeads * HeadDim, bias);
        _qNorm = weights.Get(prefix + ".q_norm.weight");
        if (!IsKvShared)
        {
            _k = Rows(weights, prefix + ".k_proj", kvStart * HeadDim, LocalKvHeads * HeadDim, bias);
            _v = config.KEqV(layer) ? null : Rows(weights, prefix + ".v_proj", kvStart * HeadDim, LocalKvHeads * HeadDim, bias);
            _kNorm = weights.Get(prefix + ".k_norm.weight");
        }
        _o = RowParallelLinear.Load(weights, prefix + ".o_proj", ctx.Tp, inputIsParallel: true, reduceResults: true, bias: bias);
    }

    /// <summary>Rows [start, start + rows) of a [out, in] weight (and its bias, when the config says it has one): this rank's heads.</summary>
    private static Linear Rows(IWeightSource weights, string prefix, int start, int rows, bool bias)
    {
        var w = weights.Get(prefix + ".weight");
        if (start + rows > w.Shape[0])
            throw new ArgumentException($"{prefix}.weight {Shape.Format(w.Shape)} has no rows [{start}, {start + rows})");
        return new Linear(w.Narrow(0, start, rows), WeightBias.Load(weights, prefix, bias)?.Narrow(0, start, rows));
    }

    /// <param name="x">[rows, hidden]: the normed input of every sequence, stacked.</param>
    /// <param name="cos">[1, rows, head_dim] for each row's position (this layer type's RoPE).</param>
    /// <param name="caches">Per sequence: the cache this layer writes (or, when KV-shared, reads).</param>
    /// <param name="spans">Per sequence: (first row, row count, positions before these rows).</param>
    /// <returns>[rows, hidden], all-reduced.</returns>
    /// <param name="blocks">Per sequence, each new row's vision block (-1: text) or null: rows of one block see each other
    /// both ways (blockwise_overlay, OR-ed with the causal or sliding mask).</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, IReadOnlyList<KvCache> caches, IReadOnlyList<(int Start, int Count, int Past)> spans,
        IReadOnlyList<int[]?>? blocks = null)
    {
        int rows = x.Shape[0], hd = HeadDim, heads = LocalHeads, kvHeads = LocalKvHeads;
        // query_states = q_norm(q_proj(x).view(hidden_shape)) (RoPE in the attention)
        var q = Norms.RmsNorm(_q.Forward(x).View(rows, heads, hd), _qNorm, _eps, RmsNormKind.GemmaScaled).View(rows, heads * hd);
        Tensor? k = null, v = null;
        if (!IsKvShared)
        {
            // value_states = v_proj(x) if v_proj else key_states (k_proj(x), before k_norm and RoPE)
            var kRaw = _k!.Forward(x).View(rows, kvHeads, hd);                           // [rows, kv, hd]
            var vRaw = _v is null ? kRaw : _v.Forward(x).View(rows, kvHeads, hd);
            k = Norms.RmsNorm(kRaw, _kNorm, _eps, RmsNormKind.GemmaScaled).View(rows, kvHeads * hd);
            v = Norms.RmsNorm(vRaw, null, _eps, RmsNormKind.GemmaNoScale).View(rows, kvHeads * hd);   // v_norm: no scale
        }

        var output = spans.Count == 1 ? null : Tensor.ZerosLike(x, x.DType, rows, heads * hd);   // [rows, heads/tp * hd]
        for (int s = 0; s < spans.Count; s++)
        {
            var (start, count, past) = spans[s];
            var cache = caches[s];
            if (cache.Length != past + (IsKvShared ? count : 0))
                throw new InvalidOperationException(
                    $"the KV cache holds {cache.Length} positions where {past} + {(IsKvShared ? count : 0)} were expected (KV sharing out of step)");
            Tensor Rows(Tensor a) => count == rows ? a : a.Narrow(a.Rank - 2, start, count);
            var o = _attention.Forward(Rows(q), k is null ? null : Rows(k), v is null ? null : Rows(v), Rows(cos), Rows(sin), cache, count,
                blocks?[s]);                                                              // [count, heads * hd]
            if (output is null) output = o;
            else output.Narrow(0, start, count).CopyFrom(o);
        }
        return _o.Forward(output!);                                                       // [rows, hidden]
    }
}
