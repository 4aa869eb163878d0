using Harness.Engine.Config;
using Harness.Engine.Tensors;
using R = Harness.Engine.Ops.Rotary;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// HF's LlamaRotaryEmbedding: inv_freq from rope_parameters ("default", "linear", "llama3"), cos/sin computed in
/// float32 for the positions and cast to the model dtype (attention_scaling 1 for these types).
/// </summary>
public sealed class LlamaRotaryEmbedding
{
    public Tensor InvFreq { get; }

    public LlamaRotaryEmbedding(RopeParameters rope, int headDim)
    {
        var ropeType = rope.RopeType;
        InvFreq = ropeType switch
        {
            "default" => R.InvFreq(rope.RopeTheta, headDim),
            "linear" => R.InvFreqLinear(rope.RopeTheta, headDim, rope.Factor ?? throw Missing("factor")),
            "llama3" => R.InvFreqLlama3(rope.RopeTheta, headDim, rope.Factor ?? throw Missing("factor"),
                rope.LowFreqFactor ?? throw Missing("low_freq_factor"), rope.HighFreqFactor ?? throw Missing("high_freq_factor"),
                rope.OriginalMaxPositionEmbeddings ?? throw Missing("original_max_position_embeddings")),
            _ => throw new NotSupportedException(
                $"rope_type '{rope.RopeType}' is not supported for Llama by the engine (supported: default, linear, llama3)"),
        };
    }

    private static ArgumentException Missing(string field) => new($"rope_parameters.{field} is required for this rope_type");

    /// <summary>positions [tokens] -> cos, sin [1, tokens, head_dim] in dtype.</summary>
    public (Tensor Cos, Tensor Sin) Forward(Tensor positions, DType dtype) =>
        R.CosSin(InvFreq, positions.Unsqueeze(0), dtype);
}
