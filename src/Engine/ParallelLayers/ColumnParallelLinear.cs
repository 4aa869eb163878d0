using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>
/// vLLM's ColumnParallelLinear: y = x W^T + b with W [out, in] split along out: rank r holds rows
/// [r*out/tp, (r+1)*out/tp) of W (and of b). Input [tokens, in] (full on every rank); output [tokens, out/tp],
/// or [tokens, out] when gather_output all-gathers the shards along the last dim.
/// </summary>
public sealed class ColumnParallelLinear
{
    private readonly Linear _local;
    private readonly IProcessGroup _tp;

    public bool GatherOutput { get; }
    public Tensor Weight => _local.Weight;

    public ColumnParallelLinear(Tensor fullWeight, Tensor? fullBias, IProcessGroup tp, bool gatherOutput, string name)
    {
        _tp = tp;
        GatherOutput = gatherOutput;
        var w = Sharding.Shard(fullWeight, 0, tp.Rank, tp.WorldSize, name + ".weight");  // [out/tp, in]
        var b = fullBias is null ? null : Sharding.Shard(fullBias, 0, tp.Rank, tp.WorldSize, name + ".bias");
        _local = new Linear(w, b);
    }

    public static ColumnParallelLinear Load(IWeightSource weights, string prefix, IProcessGroup tp, bool gatherOutput = false)
    {
        var bias = weights.Contains(prefix + ".bias") ? weights.Get(prefix + ".bias") : null;
        return new ColumnParallelLinear(weights.Get(prefix + ".weight"), bias, tp, gatherOutput, prefix);
    }

    public Tensor Forward(Tensor x)
    {
        var y = _local.Forward(x);                        // [tokens, out/tp]
        return GatherOutput ? _tp.AllGather(y, -1) : y;   // [tokens, out]
    }
}
