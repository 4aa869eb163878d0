using Harness.Engine.Capture;
using Harness.Engine.Tensors;
using Harness.Runs;
using EngineShard = Harness.Engine.Capture.ShardSpec;
using RunsShard = Harness.Runs.ShardSpec;

namespace Harness.Scenarios;

/// <summary>Feeds the engine's activation records (engine-side shard specs) into a harness <see cref="ActivationCapture"/>.</summary>
public sealed class CaptureSink(ActivationCapture capture, Action<string>? onRecord = null) : IActivationSink
{
    public ActivationCapture Capture { get; } = capture;

    public bool Wants(string module) => Capture.Wants(module);

    public void Record(string module, int worldRank, Tensor value, EngineShard shard)
    {
        Capture.Record(module, value.Clone(), Convert(shard), worldRank);
        onRecord?.Invoke(module);
    }

    private static RunsShard Convert(EngineShard shard) => shard switch
    {
        EngineShard.Full => RunsShard.Full,
        EngineShard.Sharded s => RunsShard.Sharded(s.Dim, s.Rank, s.WorldSize),
        EngineShard.Rows r => RunsShard.Rows(r.Start, r.Count, r.Dim),
        _ => throw new ArgumentOutOfRangeException(nameof(shard), shard, "unknown shard spec"),
    };
}
