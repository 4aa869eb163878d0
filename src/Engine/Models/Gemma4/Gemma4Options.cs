namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// How the engine's Gemma4 is built beyond the checkpoint: the explicit inputs through which a scenario re-creates a
/// known bug (never a global switch). Default: HF's model.
/// </summary>
public sealed record Gemma4Options
{
    /// <summary>
    /// The experts' activation name, instead of the config's hidden_activation (which the dense MLP keeps). "gelu" re-creates
    /// vLLM's Gemma4 MoE bug (FusedMoE built with activation="gelu", the exact erf GELU, where HF runs gelu_pytorch_tanh).
    /// </summary>
    public string? ExpertsActivation { get; init; }

    /// <summary>The fused experts' gate_up_proj read with its halves swapped (up rows taken as gate and vice versa).</summary>
    public bool ExpertsGateUpSwapped { get; init; }

    /// <summary>
    /// The multimodal embedders' projection built with input_is_parallel=True although it is fed the full-width soft
    /// tokens (the Gemma3n bug, same layer shape here): under TP each rank multiplies [n, mm] by its [mm/tp] shard.
    /// </summary>
    public bool EmbedderInputIsParallel { get; init; }

    public static Gemma4Options Default { get; } = new();
}
