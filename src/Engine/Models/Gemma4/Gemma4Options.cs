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

    /// <summary>
    /// Which layers let the tokens of one image see each other both ways (use_bidirectional_attention="vision").
    /// Gemma 4's rule is the default; a scenario sets the rule its reference was measured to follow.
    /// </summary>
    public Gemma4VisionMask VisionMask { get; init; } = Gemma4VisionMask.SlidingLayersOnly;

    public static Gemma4Options Default { get; } = new();
}

/// <summary>
/// The two masks transformers has given Gemma4's vision blocks (a block: a contiguous run of image or video tokens).
/// With W the sliding window, query i and key j of the same prompt:
/// <code>
///   SlidingLayersOnly  full layers:    j &lt;= i
///   (Gemma 4's rule)   sliding layers: (j &gt; i - W)  AND  (j &lt;= i  OR  same block)
///   Gemma3AllLayers    full layers:    j &lt;= i                 OR  same block
///   (Gemma 3's rule)   sliding layers: (j &lt;= i AND j &gt; i - W)  OR  same block
/// </code>
/// transformers 5.12.1 applies Gemma 3's rule (create_masks_for_generate with block_sequence_ids on every layer type);
/// later releases build Gemma 4's (create_masks_for_vision_model: "Gemma 4 explicitly disables bidirectional attention on
/// global attention layers"). The two differ on full layers, and on sliding layers once a block is longer than W.
/// </summary>
public enum Gemma4VisionMask
{
    SlidingLayersOnly,
    Gemma3AllLayers,
}
