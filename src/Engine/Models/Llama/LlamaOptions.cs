namespace Harness.Engine.Models.Llama;

/// <summary>
/// The ways the engine's Llama can be bent to re-create a known bug, for mutation checks; the default bends nothing.
/// Each is an explicit constructor input (no ambient switch is read inside a layer), so the constructor shows every
/// way the model can be made wrong.
/// </summary>
public sealed record LlamaOptions
{
    public static LlamaOptions None { get; } = new();

    /// <summary>
    /// Sequence parallelism slices the full residual as residual[0:L] on every rank instead of residual[rank*L:(rank+1)*L]
    /// before the fused add + RMSNorm (vLLM's SP bug: ranks above 0 add the wrong tokens' residual).
    /// </summary>
    public bool SpResidualFirstSlice { get; init; }

    /// <summary>
    /// SP + PP: the scattered residual crossing a pipeline stage is sliced to this rank's L rows instead of all-gathered
    /// over TP, so the next stage gets [L, hidden] where it expects every token.
    /// </summary>
    public bool SpPpResidualSliced { get; init; }

    /// <summary>
    /// Precision only: the RMSNorms' sum of squares accumulated in bfloat16, each partial sum rounded (HF keeps float32).
    /// </summary>
    public bool NormSumOfSquaresBf16 { get; init; }

    /// <summary>The attention and MLP outputs scaled by this before the residual add (1: none; a fault sets 1 + 2^-6).</summary>
    public double ResidualBranchScale { get; init; } = 1;

    /// <summary>Added to the rotary position of every decode step's token (0: none; a decode-only fault sets 1). The prompt's
    /// forward is never shifted.</summary>
    public int DecodePositionOffset { get; init; }
}
