namespace Harness.Engine.ParallelLayers;

/// <summary>
/// Whether a layer has a bias, decided by the config (attention_bias, mlp_bias) rather than by what the checkpoint holds:
/// a config that says "bias" on a checkpoint without one is an error naming the tensor, and a config that says "no bias"
/// ignores a bias in the file, as HF's module (built from the config) would. null: take it when the file has it.
/// </summary>
public static class WeightBias
{
    public static Tensors.Tensor? Load(IWeightSource weights, string prefix, bool? bias)
    {
        string name = prefix + ".bias";
        return bias switch
        {
            true => weights.Contains(name) ? weights.Get(name)
                : throw new KeyNotFoundException($"{name} is missing: the config says this layer has a bias (attention_bias / mlp_bias)"),
            false => null,
            null => weights.Contains(name) ? weights.Get(name) : null,
        };
    }
}
