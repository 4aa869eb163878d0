using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>
/// vLLM's QKVParallelLinear for grouped-query attention: q_proj [heads*hd, hidden] split by heads (heads/tp per rank);
/// k_proj and v_proj [kv_heads*hd, hidden] split by kv heads when kv_heads >= tp, else replicated: rank r uses kv head
/// r * kv_heads / tp (tp/kv_heads ranks share one). Input [tokens, hidden] (full); outputs q [tokens, heads/tp * hd],
/// k and v [tokens, kv_heads_per_rank * hd].
/// </summary>
public sealed class QKVParallelLinear
{
    private readonly Linear _q, _k, _v;

    public int LocalHeads { get; }
    public int LocalKvHeads { get; }
    public int HeadDim { get; }

    public QKVParallelLinear(IWeightSource weights, string qPrefix, string kPrefix, string vPrefix,
        int numHeads, int numKvHeads, int headDim, IProcessGroup tp, bool? bias = null)
    {
        int t = tp.WorldSize, r = tp.Rank;
        if (numHeads % t != 0)
            throw new ArgumentException($"{qPrefix}: {numHeads} attention heads are not divisible by the tensor-parallel size {t}");
        if (numKvHeads >= t ? numKvHeads % t != 0 : t % numKvHeads != 0)
            throw new ArgumentException($"{kPrefix}: {numKvHeads} kv heads cannot be split or replicated over tensor-parallel size {t}");
        HeadDim = headDim;
        LocalHeads = numHeads / t;
        LocalKvHeads = Math.Max(1, numKvHeads / t);
        int kvStart = numKvHeads >= t ? r * LocalKvHeads : r * numKvHeads / t;

        _q = Load(weights, qPrefix, r * LocalHeads * headDim, LocalHeads * headDim, bias);
        _k = Load(weights, kPrefix, kvStart * headDim, LocalKvHeads * headDim, bias);
        _v = Load(weights, vPrefix, kvStart * headDim, LocalKvHeads * headDim, bias);
        // The three shards run as one product (vLLM's fused qkv_proj): [q; k; v] rows, one launch on a GPU, one pass over
        // the packed weight on the host (decode reads the three small weights as one stream). Each output element is its
        // own dot product over k either way, so q, k, v have the bits of three separate products.
        if ((_q.Bias is null) == (_k.Bias is null) && (_k.Bias is null) == (_v.Bias is null))
        {
            _fused = new Linear(Tensor.Cat([_q.Weight, _k.Weight, _v.Weight], 0),
                _q.Bias is null ? null : Tensor.Cat([_q.Bias, _k.Bias!, _v.Bias!], 0));
            // q, k, v become views of the fused copy, so the separately uploaded shards are not kept alive beside it
            int nq = _q.OutFeatures, nk = _k.OutFeatures, nv = _v.OutFeatures;
            _q = new Linear(_fused.Weight.Narrow(0, 0, nq), _fused.Bias?.Narrow(0, 0, nq));
            _k = new Linear(_fused.Weight.Narrow(0, nq, nk), _fused.Bias?.Narrow(0, nq, nk));
            _v = new Linear(_fused.Weight.Narrow(0, nq + nk, nv), _fused.Bias?.Narrow(0, nq + nk, nv));
        }
    }

    private readonly Linear? _fused;

    private static Linear Load(IWeightSource weights, string prefix, int start, int rows, bool? withBias)
    {
        var w = weights.Get(prefix + ".weight");
        if (start + rows > w.Shape[0])
            throw new ArgumentException($"{prefix}.weight {Shape.Format(w.Shape)} has no rows [{start}, {start + rows})");
        var bias = WeightBias.Load(weights, prefix, withBias)?.Narrow(0, start, rows);
        return new Linear(w.Narrow(0, start, rows), bias);
    }

    /// <summary>q [tokens, heads/tp*hd], k and v [tokens, kv_per_rank*hd].</summary>
    /// <param name="output">With the fused projection: a buffer for [tokens, (heads + 2 kv) * hd / tp] (see
    /// <see cref="Linear.Forward(Tensor, Tensor?)"/>); q, k, v are then its views. Ignored without fusion.</param>
    /// <summary>The fused projection's output width, (heads + 2 kv) * hd / tp, or 0 when q, k, v are separate.</summary>
    public int FusedWidth => _fused?.OutFeatures ?? 0;

    public (Tensor Q, Tensor K, Tensor V) Forward(Tensor x, Tensor? output = null)
    {
        if (_fused is null) return (_q.Forward(x), _k.Forward(x), _v.Forward(x));
        var qkv = _fused.Forward(x, output);                               // [tokens, (heads + 2 kv) * hd / tp]
        int nq = _q.OutFeatures, nk = _k.OutFeatures;
        return (qkv.Narrow(-1, 0, nq), qkv.Narrow(-1, nq, nk), qkv.Narrow(-1, nq + nk, _v.OutFeatures));
    }
}
