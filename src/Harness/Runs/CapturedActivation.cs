using Harness.Engine.Capture;
using Harness.Engine.Tensors;

namespace Harness.Runs;

/// <summary>
/// One module output the engine recorded: the module's reference name (HF's, e.g. "model.layers.1.self_attn"), a
/// snapshot of the tensor, how it relates to the reference's full tensor, the rank that recorded it, and its place in
/// the order records arrived (to keep several records of one module and rank apart).
/// </summary>
public sealed record CapturedActivation(string Module, Tensor Value, ShardSpec Shard)
{
    /// <summary>The recording rank (0 in a single-process run).</summary>
    public int Rank { get; init; }

    /// <summary>Arrival order within the capture, 0, 1, 2, ... across all ranks.</summary>
    public long Sequence { get; init; }
}
