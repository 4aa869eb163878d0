using Harness.Runs;

namespace Harness.Tests.Correctness.Runs;

/// <summary>Token-by-token comparison: vLLM's check_logprobs_close rule plus the near-tie margin and matched-step logprobs.</summary>
public class TokenComparisonTests
{
    private static TokenLogprob[] TopK(params (long Token, double Logprob)[] entries) =>
        entries.Select(e => new TokenLogprob(e.Token, e.Logprob)).ToArray();

    /// <summary>Five steps; step s chooses token 10+s with a clear margin over token 100+s.</summary>
    private static (long[] Tokens, List<IReadOnlyList<TokenLogprob>> TopK) Base()
    {
        var tokens = new long[] { 10, 11, 12, 13, 14 };
        var topk = tokens.Select((t, s) => (IReadOnlyList<TokenLogprob>)TopK((t, -0.1), (100 + s, -2.5), (200 + s, -4.0))).ToList();
        return (tokens, topk);
    }

    private static TokenSequence Seq(long[] tokens, List<IReadOnlyList<TokenLogprob>> topk) => new(tokens, topk);

    [Fact]
    public void Identical_sequences_pass()
    {
        var (t, k) = Base();
        var report = TokenComparison.Run(Seq(t, k), Seq((long[])t.Clone(), [.. k]));
        Assert.True(report.Passed, report.ToString());
        Assert.Equal(TokenVerdict.Identical, report.Verdict);
        Assert.Equal(5, report.MatchedPrefix);
        Assert.Null(report.FirstDivergentStep);
        Assert.Equal(15, report.LogprobPairs);
        Assert.Equal(0, report.MaxLogprobDiff);
    }

    /// <summary>At step 3 the reference picks 13 over 42 by 0.01 nats; the engine picks 42.</summary>
    private static (TokenSequence Reference, TokenSequence Engine) DivergeAtStep3(double gap, bool engineHasReferenceToken = true)
    {
        var (t, k) = Base();
        var rk = new List<IReadOnlyList<TokenLogprob>>(k) { [3] = TopK((13, -0.69), (42, -0.69 - gap), (7, -5.0)) };
        var et = (long[])t.Clone();
        et[3] = 42;
        et[4] = 99; // after the divergence the sequences go their own ways
        var ek = new List<IReadOnlyList<TokenLogprob>>(k)
        {
            [3] = engineHasReferenceToken ? TopK((42, -0.68), (13, -0.70), (7, -5.0)) : TopK((42, -0.68), (8, -0.70), (7, -5.0)),
            [4] = TopK((99, -0.3)),
        };
        return (Seq(t, rk), Seq(et, ek));
    }

    [Fact]
    public void Divergence_at_a_near_tie_in_each_others_top_k_is_accepted_with_the_reason()
    {
        var (r, e) = DivergeAtStep3(0.01);
        var report = TokenComparison.Run(r, e);
        Assert.True(report.Passed, report.ToString());
        Assert.Equal(TokenVerdict.AcceptedDivergence, report.Verdict);
        Assert.Equal(3, report.MatchedPrefix);
        Assert.Equal(3, report.FirstDivergentStep);
        Assert.Equal((13L, 42L), (report.ReferenceToken!.Value, report.EngineToken!.Value));
        Assert.Equal(0.01, report.ReferenceTop2Gap!.Value, 9);
        Assert.Contains("step 3: tokens differ (reference 13, engine 42), accepted", report.Reason);
        Assert.Contains("check_logprobs_close", report.Reason);
        Assert.Contains("0.0100 nats apart", report.Reason);
        Assert.Contains("not compared", report.Reason);
    }

    [Fact]
    public void Divergence_with_a_wide_reference_top_2_gap_fails_naming_the_step_both_tokens_and_both_tables()
    {
        var (r, e) = DivergeAtStep3(2.0);
        var report = TokenComparison.Run(r, e, decode: id => $"tok{id}");
        Assert.False(report.Passed);
        Assert.Equal(3, report.FirstDivergentStep);
        Assert.Contains("step 3: tokens differ (reference 13, engine 42), not accepted", report.Reason);
        Assert.Contains("not a near tie", report.Reason);
        Assert.Contains("2.0000 nats apart", report.Reason);
        var text = report.ToString();
        Assert.Contains("first divergence at step 3: reference token 13 \"tok13\", engine token 42 \"tok42\"", text);
        var lines = text.Split('\n');
        int header = Array.FindIndex(lines, l => l.Contains("rank") && l.Contains("reference") && l.Contains("engine"));
        Assert.True(header >= 0, text);
        Assert.Contains("*13 \"tok13\" -0.6900", lines[header + 1]);
        Assert.Contains("*42 \"tok42\" -0.6800", lines[header + 1]);
        Assert.Contains("42 \"tok42\" -2.6900", lines[header + 2]);
        Assert.Contains("13 \"tok13\" -0.7000", lines[header + 2]);
    }

    [Fact]
    public void Chosen_token_absent_from_the_other_sides_top_k_fails()
    {
        var (r, e) = DivergeAtStep3(0.01, engineHasReferenceToken: false);
        var report = TokenComparison.Run(r, e);
        Assert.False(report.Passed);
        Assert.Contains("the reference's token 13 is not in the engine's top-3", report.Reason);
    }

    [Fact]
    public void Matched_step_logprobs_beyond_tolerance_fail_and_the_tolerance_is_a_parameter()
    {
        var (t, k) = Base();
        var ek = new List<IReadOnlyList<TokenLogprob>>(k) { [1] = TopK((11, -0.1), (101, -2.505), (200 + 1, -4.0)) };
        var report = TokenComparison.Run(Seq(t, k), Seq(t, ek));
        Assert.False(report.Passed);
        Assert.Equal(1, report.MaxLogprobDiffStep);
        Assert.Equal(101, report.MaxLogprobDiffToken);
        Assert.Equal(0.005, report.MaxLogprobDiff, 9);
        Assert.Contains("step 1, token 101", report.Reason);
        Assert.True(TokenComparison.Run(Seq(t, k), Seq(t, ek), logprobTolerance: 1e-2).Passed);
    }

    [Fact]
    public void Different_lengths_without_divergence_fail()
    {
        var (t, k) = Base();
        var report = TokenComparison.Run(Seq(t, k), Seq(t[..4], k.Take(4).ToList()));
        Assert.False(report.Passed);
        Assert.Contains("different lengths (reference 5, engine 4)", report.Reason);
    }
}
