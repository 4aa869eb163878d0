using Harness.Engine.Capture;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>Feeds the engine's activation records into a harness <see cref="ActivationCapture"/>.</summary>
public sealed class CaptureSink(ActivationCapture capture, Action<string>? onRecord = null) : IActivationSink
{
    public ActivationCapture Capture { get; } = capture;

    /// <summary>Also hears every kept record (<see cref="ScenarioContext.Tap"/>: `harness dump`).</summary>
    public IActivationSink? Tap { get; init; }

    public bool Wants(string module) => Capture.Wants(module);

    public void Record(string module, int worldRank, Tensor value, ShardSpec shard)
    {
        Capture.Record(module, value.Clone(), shard, worldRank);
        if (Capture.Wants(module)) Tap?.Record(module, worldRank, value, shard, 0);
        onRecord?.Invoke(module);
    }
}
