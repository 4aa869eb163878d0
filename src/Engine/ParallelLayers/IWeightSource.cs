using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>Full (unsharded) HF weights by parameter name; each parallel layer takes its own shard from them.</summary>
public interface IWeightSource
{
    bool Contains(string name);

    /// <summary>The full tensor; an unknown name is an error naming it (and the checkpoint).</summary>
    Tensor Get(string name);

    /// <summary>The shape of a weight, without reading (or converting, or uploading) it.</summary>
    int[] ShapeOf(string name) => Get(name).ShapeArray;

    /// <summary>
    /// Rows [start, start + length) of dim 0 (a rank's shard of a vocab table): a source that can reads, converts and
    /// uploads only those rows; the fallback narrows the full tensor.
    /// </summary>
    Tensor GetRows(string name, int start, int length) => Get(name).Narrow(0, start, length);
}

/// <summary>Weights straight from an HF checkpoint folder (model.safetensors or a sharded index), memory-mapped.</summary>
/// <param name="checkpoint">The open checkpoint.</param>
/// <param name="dtype">When set, floating-point weights are converted to it at load, as HF's from_pretrained(dtype=...) does
/// (a float32 checkpoint run in bfloat16); null keeps each tensor's stored dtype.</param>
public sealed class CheckpointWeights(Checkpoint checkpoint, DType? dtype = null) : IWeightSource
{
    public Checkpoint Checkpoint { get; } = checkpoint;
    public bool Contains(string name) => Checkpoint.Contains(name);
    public Tensor Get(string name) => Convert(Checkpoint.GetTensor(name));

    public int[] ShapeOf(string name) => (int[])Checkpoint.GetInfo(name).Shape.Clone();

    /// <summary>Only the rows' bytes are mapped into the view, and only they are converted to the requested dtype.</summary>
    public Tensor GetRows(string name, int start, int length) => Convert(Checkpoint.GetRows(name, start, length));

    // a converted copy is the weight now: the mapped pages it was read from are given back (MappedRegion.ReleaseResident)
    private Tensor Convert(Tensor t)
    {
        if (dtype is not DType d || !t.DType.IsFloatingPoint() || t.DType == d) return t;
        var converted = t.To(d);
        MappedRegion.ReleaseResident(t);
        return converted;
    }
}

/// <summary>Weights from a dictionary (tests).</summary>
public sealed class DictionaryWeights(IReadOnlyDictionary<string, Tensor> weights) : IWeightSource
{
    public bool Contains(string name) => weights.ContainsKey(name);
    public Tensor Get(string name) => weights.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"weight '{name}' is not among the {weights.Count} given");
}
