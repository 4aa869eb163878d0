using Harness.Comparison;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Tests.Correctness.Runs;

/// <summary>
/// Issue 21/22 at real size. Gemma4-E2B's published dimensions (random weights, bf16, 64 ids; one H100): every one of 319
/// modules passed against the float64 oracle, yet the verdict was DIVERGED: "step 0: tokens differ (reference 72714, engine
/// 80912), not accepted: the reference's token 72714 is not in the engine's top-5; the engine's token 80912 is not in the
/// reference's top-5". Over 262144 tokens the distribution is flat (top logprobs near -9.3, the top-5 within 0.2 nats) and
/// the reference's own logits are far from float64's, so the bf16 top-5 is noise. The oracle's full logits were captured
/// at the prefill ("oracle.logits"): they give the float64 logprob of the engine's token too, and then the oracle alone
/// decides the tie, as it does inside the top-k.
/// </summary>
public class FlatVocabularyTokenTests
{
    private const int Vocab = 4096;
    private const long RefToken = 7, EngineToken = 3000;

    /// <summary>Float64 logits: a flat vocabulary with the reference's pick on top, ten near ties 0.1 below it, and the
    /// engine's pick <paramref name="engineBelow"/> nats below the reference's (under the ten: outside every top-5).</summary>
    private static double[] Logits64(double engineBelow)
    {
        var rng = new Random(5);
        var x = Enumerable.Range(0, Vocab).Select(_ => rng.NextDouble() * 2.0).ToArray();
        for (int i = 20; i < 30; i++) x[i] = 2.9;                              // a cluster of near ties above the engine's pick
        x[RefToken] = 3.0;
        x[EngineToken] = 3.0 - engineBelow;
        return x;
    }

    private static double[] LogSoftmax(double[] x)
    {
        double max = x.Max(), lse = max + Math.Log(x.Sum(a => Math.Exp(a - max)));
        return x.Select(a => a - lse).ToArray();
    }

    /// <summary>The reference: one step, its top-5 from its own (bf16-noisy) logprobs, the oracle's of the same ids, and the
    /// captures holding the oracle's logits of the prompt's two rows (the last one is step 0's).</summary>
    private static (TokenSequence Reference, TokenSequence Engine) Case(double engineBelow, bool captured)
    {
        var lp64 = LogSoftmax(Logits64(engineBelow));
        var noise = new Random(9);
        var refLp = lp64.Select(a => a + (noise.NextDouble() - 0.5) * 0.4).ToArray();   // the reference's own error: up to 0.2 nats
        refLp[RefToken] = lp64[RefToken] + 0.2;                                             // its pick stays its argmax
        refLp[EngineToken] = lp64[EngineToken] - 0.2;                                       // and the engine's falls under the ten
        var top5 = Enumerable.Range(0, Vocab).OrderByDescending(i => refLp[i]).Take(5).ToArray();
        Assert.DoesNotContain((int)EngineToken, top5);
        var reference = new TokenSequence([RefToken], [top5.Select(i => new TokenLogprob(i, refLp[i])).ToArray()])
        {
            Oracle = [top5.Select(i => lp64[i]).ToArray()],
        };
        var rows = new double[2 * Vocab];
        Logits64(engineBelow).CopyTo(rows, Vocab);
        var captures = new Dictionary<string, Tensor>();
        if (captured) captures["oracle.logits"] = Tensor.FromArray(rows, 1, 2, Vocab);
        var engine = new TokenSequence([EngineToken],
            [new[] { new TokenLogprob(EngineToken, lp64[EngineToken] + 0.1), new TokenLogprob(11, -9.0), new TokenLogprob(12, -9.1) }]);
        return (reference.WithOracleLogits(captures), engine);
    }

    [Fact]
    public void The_oracle_reads_the_logprob_of_a_token_outside_the_reference_top_k_from_its_captured_logits()
    {
        var (reference, _) = Case(engineBelow: 0.3, captured: true);
        var lp64 = LogSoftmax(Logits64(0.3));
        Assert.Equal(lp64[EngineToken], reference.OracleOf(0, EngineToken)!.Value, 12);
        Assert.Null(reference.OracleOf(1, EngineToken));                       // no step-1 logits captured
        Assert.Null(Case(0.3, captured: false).Reference.OracleOf(0, EngineToken));
    }

    [Fact]
    public void A_pick_outside_each_others_top_5_that_the_float64_model_cannot_tell_apart_is_accepted()
    {
        var (reference, engine) = Case(engineBelow: 0.3, captured: true);
        var report = TokenComparison.Run(reference, engine, oracleBound: OracleBound.BFloat16);
        Assert.True(report.Passed, report.ToString());
        Assert.Equal(TokenVerdict.AcceptedDivergence, report.Verdict);
        Assert.Contains("the oracle decides", report.Reason);
        Assert.Contains("not in the reference's top-5", report.Reason);
    }

    [Fact]
    public void A_pick_the_float64_model_puts_far_below_the_references_fails_even_outside_the_top_k()
    {
        var (reference, engine) = Case(engineBelow: 6.0, captured: true);
        var report = TokenComparison.Run(reference, engine, oracleBound: OracleBound.BFloat16);
        Assert.False(report.Passed, report.ToString());
        Assert.Contains("not a near tie: the float64 oracle's logprobs of the two tokens are", report.Reason);
    }

    [Fact]
    public void Without_the_oracles_logits_top_k_membership_still_decides_as_before()
    {
        var (reference, engine) = Case(engineBelow: 0.3, captured: false);
        var report = TokenComparison.Run(reference, engine, oracleBound: OracleBound.BFloat16);
        Assert.False(report.Passed, report.ToString());
        Assert.Contains("is not in the reference's top-5", report.Reason);
    }

    /// <summary>
    /// The 8B goal run (a random Llama-3.1-8B, 128256 tokens, bf16, TP=1, 128 ids + 32 new tokens, H200, transformers 5.17):
    /// 376 prefill rows and every step record passed, a near tie at step 4 (top-2 0.03 nats apart) moved the check onto
    /// forced tokens, and the verdict was DIVERGED on "step 11 (teacher-forced): the reference's top-5 token(s) 7335 are not
    /// in the engine's top-5": the reference's top-5 lay within 0.4 nats, both sides' logprobs were 0.37-0.40 nats off
    /// float64 (bound 1.19), and the set check asked for the reference's top-5 above its 5th by only the fixed 0.05.
    /// Steps: 0 the tie, 1 a forced step whose top-5 is flat (spread <paramref name="spread"/>), the engine's top-5 lacking
    /// the reference's second token.
    /// </summary>
    private static (TokenSequence Reference, TokenSequence Engine, TokenSequence Forced) ForcedCase(double spread)
    {
        TokenLogprob[] refStep0 = [new(1, -7.18), new(2, -7.21), new(3, -7.43), new(4, -7.59), new(5, -7.59)];
        TokenLogprob[] refStep1 = [new(10, -7.0), new(11, -7.0 - spread / 4), new(12, -7.0 - spread / 2), new(13, -7.0 - 3 * spread / 4), new(14, -7.0 - spread)];
        var reference = new TokenSequence([1, 10], [refStep0, refStep1])
        {
            // the float64 model's logprobs of the same ids: both sides 0.3-0.4 nats off it, as measured
            Oracle = [refStep0.Select(t => t.Logprob + 0.35).ToArray(), refStep1.Select(t => t.Logprob - 0.38).ToArray()],
        };
        TokenLogprob[] engStep0 = [new(2, -7.21), new(1, -7.31), new(4, -7.52), new(3, -7.52), new(5, -7.52)];
        TokenLogprob[] engStep1 = [new(10, -7.05), new(12, -7.1), new(13, -7.2), new(14, -7.3), new(99, -7.31)];   // no 11
        var engine = new TokenSequence([2, 10], [engStep0, engStep1]);
        var forced = new TokenSequence([2, 10], [engStep0, engStep1]);
        return (reference, engine, forced);
    }

    [Fact]
    public void A_flat_top_5_missing_one_reference_token_at_a_forced_step_is_within_what_the_oracle_can_decide()
    {
        var (reference, engine, forced) = ForcedCase(spread: 0.4);
        var report = TokenComparison.Run(reference, engine, engineForced: forced, oracleBound: OracleBound.BFloat16);
        Assert.True(report.Passed, report.ToString());
        Assert.Equal(TokenVerdict.AcceptedDivergence, report.Verdict);
        Assert.Equal(1, report.ForcedSteps);
    }

    [Fact]
    public void A_reference_token_far_above_its_kth_missing_from_the_engines_forced_top_k_still_fails()
    {
        // the same, but the reference's second token stands 4 nats above its 5th: more than twice the bound (about 2.1)
        var (reference, engine, forced) = ForcedCase(spread: 16.0);
        var report = TokenComparison.Run(reference, engine, engineForced: forced, oracleBound: OracleBound.BFloat16);
        Assert.False(report.Passed, report.ToString());
        Assert.Contains("step 1 (teacher-forced): the reference's top-5 token(s) 11 are not in the engine's top-5", report.Reason);
        Assert.Contains("twice the logprob bound", report.Reason);
    }

    [Fact]
    public void Without_the_oracle_the_forced_top_k_sets_keep_the_fixed_margin()
    {
        var (reference, engine, forced) = ForcedCase(spread: 0.4);
        var noOracle = new TokenSequence(reference.Tokens, reference.TopK);
        var report = TokenComparison.Run(noOracle, engine, engineForced: forced, margin: 0.05);
        Assert.Contains("step 1 (teacher-forced): the reference's top-5 token(s) 11 are not in the engine's top-5", report.Reason);
        Assert.Contains("the margin", report.Reason);
    }
}
