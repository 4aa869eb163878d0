using Harness.Engine.Capture;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>Feeds the engine's activation records into a harness <see cref="ActivationCapture"/>.</summary>
public sealed class CaptureSink(ActivationCapture capture, Action<string>? onRecord = null) : IActivationSink
{
    public ActivationCapture Capture { get; } = capture;

    public bool Wants(string module) => Capture.Wants(module);

    public void Record(string module, int worldRank, Tensor value, ShardSpec shard)
    {
        Capture.Record(module, value.Clone(), shard, worldRank);
        onRecord?.Invoke(module);
    }
}

/// <summary>
/// Records the prompt's forward only: a scenario builds its model ONCE over this sink, runs the captured forward, then turns
/// it off (<see cref="Enabled"/> = false) and decodes on the same model (issue 20: each scenario built its model twice, with
/// and without the capture sink, and Llama three times). One per rank: ranks finish their forward at different times.
/// </summary>
public sealed class PrefillSink(IActivationSink inner) : IActivationSink
{
    public volatile bool Enabled = true;
    public bool Wants(string module) => Enabled && inner.Wants(module);
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard)
    {
        if (Enabled) inner.Record(module, worldRank, value, shard);
    }
}
