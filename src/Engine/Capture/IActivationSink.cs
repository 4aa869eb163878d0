using Harness.Engine.Tensors;

namespace Harness.Engine.Capture;

/// <summary>
/// Where the engine records named activations, at the same module paths the reference hooks
/// (model.layers.0.self_attn, model.norm, lm_head, ...), in the reference's layout ([batch, tokens, ...]).
/// Called from every rank; implementations are thread-safe and cheap when a module is not wanted.
/// </summary>
public interface IActivationSink
{
    bool Wants(string module);

    void Record(string module, int worldRank, Tensor value, ShardSpec shard);
}

/// <summary>Records nothing.</summary>
public sealed class NoCapture : IActivationSink
{
    public static readonly NoCapture Instance = new();
    public bool Wants(string module) => false;
    public void Record(string module, int worldRank, Tensor value, ShardSpec shard) { }
}

/// <summary>An engine failure inside a named module on a rank, so the harness can say where a run broke.</summary>
public sealed class ModuleFailedException(string module, int worldRank, Exception inner)
    : Exception($"{module} (rank {worldRank}) failed: {inner.Message}", inner)
{
    public string Module { get; } = module;
    public int WorldRank { get; } = worldRank;
}
