using Harness.Engine.ParallelLayers;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// Qwen2-VL's weights by HF module path (model.language_model.*, model.visual.*, lm_head.*) over either checkpoint
/// layout: the one the released checkpoints and transformers' save_pretrained write (model.layers.*, model.embed_tokens.*,
/// model.norm.*, visual.*) or the module layout itself. A name missing from both is an error naming both.
/// </summary>
public sealed class Qwen2VlWeights(IWeightSource inner) : IWeightSource
{
    private const string Text = "model.language_model.", Visual = "model.visual.";

    /// <summary>The checkpoint's name for a module-path name (the module path when the checkpoint uses it).</summary>
    public string Resolve(string name)
    {
        if (inner.Contains(name)) return name;
        var legacy = name.StartsWith(Text, StringComparison.Ordinal) ? "model." + name[Text.Length..]
            : name.StartsWith(Visual, StringComparison.Ordinal) ? "visual." + name[Visual.Length..]
            : name;
        return inner.Contains(legacy) ? legacy : name;
    }

    public bool Contains(string name) => inner.Contains(Resolve(name));

    public Harness.Engine.Tensors.Tensor Get(string name) => inner.Get(Resolve(name));

    /// <summary>A weight's shape checked against the config field that fixes it: a mismatch names both.</summary>
    public void Expect(string name, string field, params int[] shape)
    {
        var t = Get(name);
        if (!t.Shape.SequenceEqual(shape))
            throw new ArgumentException($"{Resolve(name)} is {Harness.Engine.Tensors.Shape.Format(t.Shape)}, but {field} makes it " +
                                        Harness.Engine.Tensors.Shape.Format(shape));
    }
}
