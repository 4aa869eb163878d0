using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>Full (unsharded) HF weights by parameter name; each parallel layer takes its own shard from them.</summary>
public interface IWeightSource
{
    bool Contains(string name);

    /// <summary>The full tensor; an unknown name is an error naming it (and the checkpoint).</summary>
    Tensor Get(string name);
}

/// <summary>Weights straight from an HF checkpoint folder (model.safetensors or a sharded index), memory-mapped.</summary>
public sealed class CheckpointWeights(Checkpoint checkpoint) : IWeightSource
{
    public Checkpoint Checkpoint { get; } = checkpoint;
    public bool Contains(string name) => Checkpoint.Contains(name);
    public Tensor Get(string name) => Checkpoint.GetTensor(name);
}

/// <summary>Weights from a dictionary (tests).</summary>
public sealed class DictionaryWeights(IReadOnlyDictionary<string, Tensor> weights) : IWeightSource
{
    public bool Contains(string name) => weights.ContainsKey(name);
    public Tensor Get(string name) => weights.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"weight '{name}' is not among the {weights.Count} given");
}
