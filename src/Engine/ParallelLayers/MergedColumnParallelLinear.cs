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

    /// <param name="fullWeights">Each part's full weight [out_i, in].</param>
    /// <param name="tp">The tensor-parallel group: rank r keeps rows [r*out_i/tp, (r+1)*out_i/tp) of each part.</param>
    /// <param name="names">Each part's name, for errors.</param>
    /// <param name="fullBiases">Each part's full bias [out_i] (sharded like its rows), or null for none.</param>
    public MergedColumnParallelLinear(IReadOnlyList<Tensor> fullWeights, IProcessGroup tp, IReadOnlyList<string> names,
        IReadOnlyList<Tensor>? fullBiases = null)
    {
        var shards = fullWeights.Select((w, i) => Sharding.Shard(w, 0, tp.Rank, tp.WorldSize, names[i] + ".weight")).ToList();
        LocalSizes = shards.Select(s => s.Shape[0]).ToArray();
        var biases = fullBiases?.Select((b, i) => Sharding.Shard(b, 0, tp.Rank, tp.WorldSize, names[i] + ".bias")).ToList();
        _local = Linear.Stacked(shards, biases is null ? null : Tensor.Cat(biases, 0));   // [sum(out_i)/tp, in], packed from the shards on the host
    }

    /// <param name="bias">true: every part has a bias (mlp_bias); false: none; null: as the checkpoint has them.</param>
    public static MergedColumnParallelLinear Load(IWeightSource weights, IReadOnlyList<string> prefixes, IProcessGroup tp, bool? bias = null)
    {
        var biases = prefixes.Select(p => WeightBias.Load(weights, p, bias)).ToList();
        if (biases.Any(b => b is null) && biases.Any(b => b is not null))
            throw new KeyNotFoundException($"{string.Join(", ", prefixes.Where((_, i) => biases[i] is null).Select(p => p + ".bias"))} missing where the other parts have a bias");
        return new(prefixes.Select(p => weights.Get(p + ".weight")).ToList(), tp, prefixes, biases.All(b => b is not null) ? biases.Select(b => b!).ToList() : null);
    }

    /// <param name="output">A buffer for [tokens, sum(out_i)/tp] (see <see cref="Linear.Forward(Tensor, Tensor?)"/>), or null.</param>
    public Tensor Forward(Tensor x, Tensor? output = null) => _local.Forward(x, output); // [tokens, sum(out_i)/tp]

    /// <summary>sum(out_i)/tp: this rank's output width.</summary>
    public int LocalOutFeatures => _local.OutFeatures;
}
