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
    private readonly Linear? _q, _k, _v;   // the three shards, unfused (without fusion only)
    private readonly int _nq, _nk, _nv;    // their widths: heads/tp * hd, kv_per_rank * hd twice

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

        var q = Load(weights, qPrefix, r * LocalHeads * headDim, LocalHeads * headDim, bias);
        var k = Load(weights, kPrefix, kvStart * headDim, LocalKvHeads * headDim, bias);
        var v = Load(weights, vPrefix, kvStart * headDim, LocalKvHeads * headDim, bias);
        (_nq, _nk, _nv) = (q.OutFeatures, k.OutFeatures, v.OutFeatures);
        // The three shards run as one product (vLLM's fused qkv_proj): [q; k; v] rows, one launch on a GPU, one pass over
        // the packed weight on the host (decode reads the three small weights as one stream). Each output element is its
        // own dot product over k either way, so q, k, v have the bits of three separate products. On the host the fused
        // weight is packed straight from the three shards (no concatenated copy); the separate Linears are not kept, so
        // the separately uploaded shards on a GPU are not kept alive beside the fused copy.
        if ((q.Bias is null) == (k.Bias is null) && (k.Bias is null) == (v.Bias is null))
            _fused = Linear.Stacked([q.Weight, k.Weight, v.Weight], q.Bias is null ? null : Tensor.Cat([q.Bias, k.Bias!, v.Bias!], 0));
        else
            (_q, _k, _v) = (q, k, v);
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
        if (_fused is null) return (_q!.Forward(x), _k!.Forward(x), _v!.Forward(x));
        var qkv = _fused.Forward(x, output);                               // [tokens, (heads + 2 kv) * hd / tp]
        return (qkv.Narrow(-1, 0, _nq), qkv.Narrow(-1, _nq, _nk), qkv.Narrow(-1, _nq + _nk, _nv));
    }
}
