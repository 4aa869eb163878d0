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
/// <param name="checkpoint">The open checkpoint.</param>
/// <param name="dtype">When set, floating-point weights are converted to it at load, as HF's from_pretrained(dtype=...) does
/// (a float32 checkpoint run in bfloat16); null keeps each tensor's stored dtype.</param>
public sealed class CheckpointWeights(Checkpoint checkpoint, DType? dtype = null) : IWeightSource
{
    public Checkpoint Checkpoint { get; } = checkpoint;
    public bool Contains(string name) => Checkpoint.Contains(name);
    public Tensor Get(string name)
    {
        var t = Checkpoint.GetTensor(name);
        return dtype is DType d && t.DType.IsFloatingPoint() && t.DType != d ? t.To(d) : t;
    }
}

/// <summary>Weights from a dictionary (tests).</summary>
public sealed class DictionaryWeights(IReadOnlyDictionary<string, Tensor> weights) : IWeightSource
{
    public bool Contains(string name) => weights.ContainsKey(name);
    public Tensor Get(string name) => weights.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"weight '{name}' is not among the {weights.Count} given");
}
