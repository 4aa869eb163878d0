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
    private readonly int? _window;
    private readonly Gemma4VisionMask _visionMask;

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
        _window = config.IsSliding(layer) ? config.SlidingWindow : null;
        _visionMask = visionMask;

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
        // query_states = apply_rotary_pos_emb(q_norm(q_proj(x).view(hidden_shape)), cos, sin, unsqueeze_dim=2)
        var q = _q.Forward(x).View(1, rows, heads, hd);                                  // [1, rows, heads, hd]
        q = Norms.RmsNorm(q, _qNorm, _eps, RmsNormKind.GemmaScaled);
        q = Rotary.Apply(q, cos, sin, unsqueezeDim: 2);
        Tensor? k = null, v = null;
        if (!IsKvShared)
        {
            // value_states = v_proj(x) if v_proj else key_states (k_proj(x), before k_norm and RoPE)
            var kRaw = _k!.Forward(x).View(1, rows, kvHeads, hd);                        // [1, rows, kv, hd]
            var vRaw = _v is null ? kRaw : _v.Forward(x).View(1, rows, kvHeads, hd);
            k = Rotary.Apply(Norms.RmsNorm(kRaw, _kNorm, _eps, RmsNormKind.GemmaScaled), cos, sin, unsqueezeDim: 2);
            v = Norms.RmsNorm(vRaw, null, _eps, RmsNormKind.GemmaNoScale);                 // v_norm: no scale
        }

        var output = Tensor.ZerosLike(x, x.DType, rows, heads * hd);                           // [rows, heads/tp * hd]
        for (int s = 0; s < spans.Count; s++)
        {
            var (start, count, past) = spans[s];
            var cache = caches[s];
            if (!IsKvShared)
                cache.Append(k!.Select(0, 0).Narrow(0, start, count).Transpose(0, 1),       // [kv, count, hd]
                             v!.Select(0, 0).Narrow(0, start, count).Transpose(0, 1));
            var (keys, values) = cache.Filled;                                            // [kv, past + count, hd]
            if (keys.Shape[1] != past + count)
                throw new InvalidOperationException(
                    $"the KV cache holds {keys.Shape[1]} positions where {past} + {count} were expected (KV sharing out of step)");
            var qs = q.Select(0, 0).Narrow(0, start, count).Transpose(0, 1);              // [heads, count, hd]
            var o = Attend(qs, keys, values, past, x.DType, blocks?[s]);                  // [heads, count, hd]
            output.Narrow(0, start, count).CopyFrom(o.Transpose(0, 1).Reshape(count, heads * hd));
        }
        return _o.Forward(output);                                                        // [rows, hidden]
    }

    // softmax((q k^T) * scaling + mask, float32).to(dtype) @ v, grouped-query by broadcasting (repeat_kv).
    private Tensor Attend(Tensor q, Tensor keys, Tensor values, int past, DType dtype, int[]? blocks)
    {
        int heads = q.Shape[0], t = q.Shape[1], hd = q.Shape[2], kv = keys.Shape[0], s = keys.Shape[1];
        int group = heads / kv;
        var qg = q.Reshape(kv, group, t, hd);                                             // [kv, group, t, hd]
        var scores = Matmul.Forward(qg, keys.Unsqueeze(1).Transpose(-1, -2));              // [kv, group, t, s]; scaling = 1.0
        var scores32 = scores.To(DType.Float32).Contiguous();
        if (scores32.IsCuda) Cuda.CudaModelOps.AttentionMask(scores32, t, s, past, _window, blocks, _visionMask == Gemma4VisionMask.SlidingLayersOnly);
        else Mask(scores32.Span<float>(), t, s, past, _window, blocks, _visionMask);
        var probs = Softmax.Forward(scores32, -1).To(dtype);
        return Matmul.Forward(probs, values.Unsqueeze(1)).Reshape(heads, t, hd);          // [heads, t, hd]
    }

    // Query i (absolute position past + i) sees key j iff j <= past + i and, with a window W, j > past + i - W. Vision
    // blocks (new rows only: keys of earlier calls are text or closed blocks) widen that per Gemma4VisionMask:
    //   SlidingLayersOnly: sliding layers (j > i - W) AND (j <= i OR same block); full layers causal only
    //   Gemma3AllLayers:   every layer (causal AND window) OR same block
    private static void Mask(Span<float> scores, int t, int s, int past, int? window, int[]? blocks, Gemma4VisionMask rule)
    {
        for (int plane = 0; plane < scores.Length; plane += t * s)
            for (int i = 0; i < t; i++)
            {
                var row = scores.Slice(plane + i * s, s);
                int pos = past + i;
                for (int j = 0; j < s; j++)
                {
                    bool causal = j <= pos, inWindow = !(window is int w && j <= pos - w);
                    bool sameBlock = blocks is not null && j >= past && blocks[i] >= 0 && blocks[i] == blocks[j - past];
                    bool visible = rule switch
                    {
                        Gemma4VisionMask.Gemma3AllLayers => (causal && inWindow) || sameBlock,
                        _ => window is null ? causal : inWindow && (causal || sameBlock),
                    };
                    if (!visible) row[j] = float.NegativeInfinity;
                }
            }
    }
}
