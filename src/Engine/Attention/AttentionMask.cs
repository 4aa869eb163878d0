using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Attention;

/// <summary>
/// The one mask builder: which keys a query sees. Query i of this call sits at absolute position pos = past + i; key j at
/// position j.
/// <code>
/// causal     j &lt;= pos                                  (off for the towers: every key)
/// window W   j &gt; pos - W                              (sliding layers: Gemma3n, Gemma4)
/// blocks     rows of one vision block see each other both ways (new rows only: earlier keys are text or closed blocks)
///   BlocksOnSlidingLayersOnly (Gemma 4's rule, transformers after 5.12): sliding layers: window AND (causal OR same block);
///                                                                       full layers: causal only
///   otherwise (Gemma 3's rule, transformers 5.12.1):                   every layer: (causal AND window) OR same block
/// </code>
/// Applied in place to float32 scores [planes, t, s] (-inf where not visible), on the host or the GPU (one kernel with
/// both block rules).
/// </summary>
public sealed record AttentionMask
{
    /// <summary>Causal, no window, no blocks: Llama, Qwen2-VL, full layers.</summary>
    public static readonly AttentionMask CausalOnly = new();

    /// <summary>Every key visible (the vision towers).</summary>
    public static readonly AttentionMask None = new() { Causal = false };

    /// <summary>Whether key j &gt; pos is hidden.</summary>
    public bool Causal { get; init; } = true;

    /// <summary>The sliding window W (null: none).</summary>
    public int? Window { get; init; }

    /// <summary>Which rule widens the mask for vision blocks (<see cref="Models.Gemma4.Gemma4VisionMask"/>).</summary>
    public bool BlocksOnSlidingLayersOnly { get; init; } = true;

    /// <summary>A causal sliding-window mask (null: plain causal).</summary>
    public static AttentionMask Sliding(int? window, bool blocksOnSlidingLayersOnly = true) =>
        new() { Window = window, BlocksOnSlidingLayersOnly = blocksOnSlidingLayersOnly };

    /// <summary>Causal without a window: the fused host kernel's case.</summary>
    public bool IsPlainCausal => Causal && Window is null;

    /// <summary>Whether key j is visible to the query at position pos (blocks: the new rows' block ids, past: the first new position).</summary>
    public bool Visible(int pos, int j, int past, int i, int[]? blocks)
    {
        bool causal = !Causal || j <= pos, inWindow = !(Window is int w && j <= pos - w);
        bool sameBlock = blocks is not null && j >= past && blocks[i] >= 0 && blocks[i] == blocks[j - past];
        if (!BlocksOnSlidingLayersOnly) return (causal && inWindow) || sameBlock;
        return Window is null ? causal : inWindow && (causal || sameBlock);
    }

    /// <summary>In place on contiguous float32 scores [planes, t, s]: -inf where <see cref="Visible"/> says no.</summary>
    public void Apply(Tensor scores, int t, int s, int past, int[]? blocks = null)
    {
        if (!Causal && Window is null && blocks is null) return;
        OpBackend.Of(scores).MaskScores(this, scores, t, s, past, blocks);   // the host: the span loop below
    }

    /// <summary>The host loop of <see cref="Apply(Tensor, int, int, int, int[])"/> over [planes, t, s] flat.</summary>
    public void Apply(Span<float> scores, int t, int s, int past, int[]? blocks = null)
    {
        for (int plane = 0; plane < scores.Length; plane += t * s)
            for (int i = 0; i < t; i++)
            {
                var row = scores.Slice(plane + i * s, s);
                int pos = past + i;
                if (blocks is null && Window is null)
                {   // plain causal: the tail after pos
                    if (Causal && pos + 1 < s) row[(pos + 1)..].Fill(float.NegativeInfinity);
                    continue;
                }
                for (int j = 0; j < s; j++)
                    if (!Visible(pos, j, past, i, blocks)) row[j] = float.NegativeInfinity;
            }
    }

    /// <summary>
    /// masked_fill(!visible, value) on float32 logits [B, N, per...] with one flag per element of a batch entry's [per]
    /// (broadcast over the N planes): a tower's own mask (Gemma4's audio blocks), where HF fills a finite value.
    /// </summary>
    public static Tensor MaskedFill(Tensor logits, bool[] visible, int batch, int planes, float value)
    {
        long per = logits.NumEl / ((long)batch * planes);
        if (visible.Length != batch * per) throw new ArgumentException($"masked_fill: {visible.Length} flags for {batch} x {per} elements");
        return OpBackend.Of(logits).MaskedFill(logits, visible, batch, planes, value);
    }

    /// <summary>The host's <see cref="MaskedFill"/>: a copy with the hidden elements overwritten.</summary>
    internal static Tensor MaskedFillOnHost(Tensor logits, bool[] visible, int batch, int planes, float value)
    {
        long per = logits.NumEl / ((long)batch * planes);
        var y = logits.Contiguous().Clone();
        var sp = y.Span<float>();
        for (int bi = 0; bi < batch; bi++)
        for (int ni = 0; ni < planes; ni++)
        for (long i = 0; i < per; i++)
            if (!visible[bi * per + i]) sp[(int)((bi * planes + ni) * per + i)] = value;
        return y;
    }
}
