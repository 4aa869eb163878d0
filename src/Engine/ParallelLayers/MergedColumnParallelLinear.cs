using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>
/// vLLM's MergedColumnParallelLinear: several column-parallel projections of the same input in one GEMM
/// (gate_proj and up_proj). Each weight [out_i, in] is split along out; rank r's merged weight is
/// cat(W_0 shard r, W_1 shard r, ...) so its output [tokens, sum(out_i)/tp] is [gate shard | up shard].
/// </summary>
public sealed class MergedColumnParallelLinear
{
    private readonly Linear _local;

    /// <summary>Each part's width in this rank's output.</summary>
    public int[] LocalSizes { get; }

    public MergedColumnParallelLinear(IReadOnlyList<Tensor> fullWeights, IProcessGroup tp, IReadOnlyList<string> names)
    {
        var shards = fullWeights.Select((w, i) => Sharding.Shard(w, 0, tp.Rank, tp.WorldSize, names[i] + ".weight")).ToList();
        LocalSizes = shards.Select(s => s.Shape[0]).ToArray();
        _local = new Linear(Tensor.Cat(shards, 0)); // [sum(out_i)/tp, in]
    }

    public static MergedColumnParallelLinear Load(IWeightSource weights, IReadOnlyList<string> prefixes, IProcessGroup tp) =>
        new(prefixes.Select(p => weights.Get(p + ".weight")).ToList(), tp, prefixes);

    public Tensor Forward(Tensor x) => _local.Forward(x); // [tokens, sum(out_i)/tp]
}
