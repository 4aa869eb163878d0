using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>
/// vLLM's RowParallelLinear: y = x W^T + b with W [out, in] split along in: rank r holds columns [r*in/tp, (r+1)*in/tp).
/// input_is_parallel=true: the input is already this rank's slice [tokens, in/tp] (the output of a column-parallel
/// layer); false: the input is full width [tokens, in] and each rank takes its slice first (Gemma3n's multimodal
/// embedder needs this: it projects a full-width input). Each rank's partial product [tokens, out] is summed by an
/// all-reduce when reduce_results (else returned partial, for a reduce-scatter under sequence parallelism);
/// the bias is added once, by rank 0 inside its GEMM (vLLM's bias_ = None if tp_rank > 0), before the sum.
/// </summary>
public sealed class RowParallelLinear
{
    private readonly Linear _local;
    private readonly IProcessGroup _tp;

    public bool InputIsParallel { get; }
    public bool ReduceResults { get; }
    public int InFeatures { get; }

    /// <summary>out: the output width (every rank's partial product has it).</summary>
    public int OutFeatures => _local.OutFeatures;

    public RowParallelLinear(Tensor fullWeight, Tensor? bias, IProcessGroup tp, bool inputIsParallel, bool reduceResults, string name)
    {
        _tp = tp;
        // The fault re-creates the Gemma3n TP=2 bug: a full-width input treated as already split.
        InputIsParallel = inputIsParallel;
        ReduceResults = reduceResults;
        InFeatures = fullWeight.Shape[1];
        // vLLM adds the bias on rank 0 only, inside its GEMM (before the reduction): once in the sum, and at TP=1 exactly
        // F.linear's single rounding.
        _local = new Linear(Sharding.Shard(fullWeight, 1, tp.Rank, tp.WorldSize, name + ".weight"), tp.Rank == 0 ? bias : null); // [out, in/tp]
    }

    public static RowParallelLinear Load(IWeightSource weights, string prefix, IProcessGroup tp, bool inputIsParallel = true, bool reduceResults = true,
        bool? bias = null)
    {
        var b = WeightBias.Load(weights, prefix, bias);
        return new RowParallelLinear(weights.Get(prefix + ".weight"), b, tp, inputIsParallel, reduceResults, prefix);
    }

    /// <param name="output">A buffer for [tokens, out] (see <see cref="Linear.Forward(Tensor, Tensor?)"/>), used at
    /// TP=1 only: under TP the all-reduce returns its own tensor.</param>
    public Tensor Forward(Tensor x, Tensor? output = null)
    {
        if (!InputIsParallel)
            x = Sharding.Shard(x, -1, _tp.Rank, _tp.WorldSize, "RowParallelLinear input"); // [tokens, in] -> [tokens, in/tp]
        var partial = _local.Forward(x, _tp.WorldSize == 1 ? output : null);              // [tokens, out], this rank's part
        if (!ReduceResults) return partial;
        return _tp.WorldSize == 1 ? partial : _tp.AllReduce(partial);                     // [tokens, out]
    }
}
