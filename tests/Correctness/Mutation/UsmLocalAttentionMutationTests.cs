using Harness.Engine.Models.Common;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The USM conformer's blocked local attention shared by Gemma3n's and Gemma4's audio towers
/// (src/Engine/Models/Common/UsmLocalAttention.cs), at the edges the catalog's two audio towers do not reach: the
/// constructor's and the relative shift's refusals, the blocked mask for every (past, future, padding) against its
/// definition, and the timing signal in closed form (Stryker.NET mutants of the llama slice's Models/Common files,
/// notes/issue-21-mutllama.md).
/// </summary>
public class UsmLocalAttentionMutationTests
{
    private static UsmLocalAttention Attention(int chunk, int past, int future) =>
        new(heads: 2, headDim: 4, chunk, past, future, softCap: 50.0, MatmulOptions.Default);

    [Fact]
    public void A_chunk_below_1_or_a_negative_context_is_refused_naming_the_values()
    {
        Assert.Equal("attention chunk size must be at least 1, got 0",
            Assert.Throws<ArgumentException>(() => Attention(0, 1, 1)).Message);
        Assert.Equal("attention context must not be negative (past -1, future 0)",
            Assert.Throws<ArgumentException>(() => Attention(2, -1, 0)).Message);
        Assert.Equal("attention context must not be negative (past 0, future -1)",
            Assert.Throws<ArgumentException>(() => Attention(2, 0, -1)).Message);
        var a = Attention(1, 0, 0);                                                      // the smallest valid window
        Assert.Equal((1, 0, 0, 1), (a.Chunk, a.Past, a.Future, a.Context));
        Assert.Equal(3 + 5 + 2, Attention(3, 5, 2).Context);
    }

    [Fact]
    public void The_relative_shift_refuses_more_relative_positions_than_the_context_holds_plus_one()
    {
        var ok = UsmLocalAttention.RelShift(Tensor.Zeros(DType.Float32, 1, 1, 1, 2, 4), 3);   // F = C + 1: no padding
        Assert.Equal([1, 1, 1, 2, 3], ok.ShapeArray);
        var e = Assert.Throws<ArgumentException>(() => UsmLocalAttention.RelShift(Tensor.Zeros(DType.Float32, 1, 1, 1, 2, 5), 3));
        Assert.Equal("rel_shift: 5 relative positions exceed context_size + 1 = 4", e.Message);
    }

    [Fact]
    public void The_relative_shift_without_padding_skews_each_query_row_by_its_offset()
    {
        // F = C + 1 (no zero column to add): [W=2, F=4] read as [W*(C+1)][:W*C] -> row w starts at column w of its own row
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6, 7, 8 }, 1, 1, 1, 2, 4);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, UsmLocalAttention.RelShift(x, 3).ToFloatArray());
        // the planted bug with F > C keeps F columns (no skew)
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, UsmLocalAttention.RelShift(x, 3, skipped: true).ToFloatArray());
    }

    [Theory]
    [InlineData(3, 2, 1, 7, 2, 1)]      // Gemma3n's bounds (past, future), T not a multiple of W
    [InlineData(3, 2, 1, 7, 1, 0)]      // Gemma4's (past - 1, future - 1)
    [InlineData(4, 3, 0, 8, 3, -1)]     // Gemma4 with context_right 0: maxForward -1, no key ahead
    [InlineData(2, 0, 2, 5, 0, 2)]
    public void The_blocked_mask_is_its_definition_for_every_block_query_and_key(int chunk, int past, int future, int t, int maxBack, int maxForward)
    {
        var a = Attention(chunk, past, future);
        int b = 2, u = (t + chunk - 1) / chunk, c = a.Context;
        var valid = new bool[b * t];
        for (int i = 0; i < valid.Length; i++) valid[i] = i % t != 1 && i != b * t - 1;  // frame 1 of each clip and the last frame padded
        var m = a.BlockedMask(valid, b, t, maxBack, maxForward);
        Assert.Equal(b * u * chunk * c, m.Length);
        int seen = 0;
        for (int bi = 0; bi < b; bi++)
        for (int ui = 0; ui < u; ui++)
        for (int wi = 0; wi < chunk; wi++)
        for (int ci = 0; ci < c; ci++)
        {
            int q = ui * chunk + wi, k = ui * chunk - past + ci;
            bool want = q < t && k >= 0 && k < t && valid[bi * t + k] && (q >= k ? q - k <= maxBack : k - q <= maxForward);
            Assert.True(want == m[((bi * u + ui) * chunk + wi) * c + ci], $"clip {bi} block {ui} query {wi} key column {ci}: want {want}");
            if (want) seen++;
        }
        Assert.True(seen > t, $"only {seen} visible pairs: the case tests too little");
        Assert.Equal($"attention mask: {b * t - 1} frame flags for {b} x {t} frames",
            Assert.Throws<ArgumentException>(() => a.BlockedMask(valid[1..], b, t, maxBack, maxForward)).Message);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(6)]
    public void The_timing_signal_is_sin_then_cos_of_position_times_inverse_timescales(int channels)
    {
        // inv_timescales = exp(arange(n) * -ln(1e4) / max(n - 1, 1)) in float32: one channel pair divides by 1, not 0
        int half = channels / 2;
        var pe = UsmLocalAttention.TimingSignal(channels, first: 3, count: 5, DType.Float32).ToFloatArray();
        Assert.Equal(5 * channels, pe.Length);
        float inc = (float)(-Math.Log(10000.0) / Math.Max(half - 1, 1));
        for (int r = 0; r < 5; r++)
            for (int i = 0; i < half; i++)
            {
                float st = (3 - r) * (float)Math.Exp((float)i * inc);
                Assert.Equal((float)Math.Sin(st), pe[r * channels + i]);
                Assert.Equal((float)Math.Cos(st), pe[r * channels + half + i]);
            }
        Assert.Equal(DType.BFloat16, UsmLocalAttention.TimingSignal(channels, 3, 5, DType.BFloat16).DType);
    }
}
