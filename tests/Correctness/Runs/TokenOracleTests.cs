using Harness.Comparison;
using Harness.Runs;

namespace Harness.Tests.Correctness.Runs;

/// <summary>
/// Issue 21: tokens judged by the float64 oracle (the engine's logprob error against the reference's own), and no check
/// ended by a near tie: after an accepted divergence every later step is compared on the engine's teacher-forced decoding.
/// </summary>
public class TokenOracleTests
{
    private static TokenLogprob[] TopK(params (long Token, double Logprob)[] e) => e.Select(x => new TokenLogprob(x.Token, x.Logprob)).ToArray();

    /// <summary>Six steps choosing 10+s (-0.2) over 100+s (-2.0) and 200+s (-4.0); the oracle = reference + the given offset.</summary>
    private static TokenSequence Sequence(long[] tokens, Func<int, TokenLogprob[]> topk, Func<int, double>? oracleOffset = null)
    {
        var lists = Enumerable.Range(0, tokens.Length).Select(s => (IReadOnlyList<TokenLogprob>)topk(s)).ToList();
        return new TokenSequence(tokens, lists)
        {
            Oracle = oracleOffset is null ? null : lists.Select((l, s) => l.Select(e => e.Logprob + oracleOffset(s)).ToArray()).ToList(),
        };
    }

    private static readonly long[] RefTokens = [10, 11, 12, 13, 14, 15];

    private static TokenLogprob[] Clear(int s, double shift = 0) => TopK((10 + s, -0.2 + shift), (100 + s, -2.0), (200 + s, -4.0));

    /// <summary>The case: the reference's top-2 are 0.027 nats apart at step 1; the engine takes the other one.</summary>
    private static (TokenSequence Reference, TokenSequence Engine) NearTieAtStep1(bool withOracle)
    {
        var reference = Sequence(RefTokens, s => s == 1 ? TopK((11, -0.680), (77, -0.707), (201, -4.0)) : Clear(s),
            withOracle ? _ => 0.01 : null);
        var engineTokens = new long[] { 10, 77, 90, 91, 92, 93 };                    // free-running after the tie: its own way
        var engine = Sequence(engineTokens, s => s switch
        {
            0 => Clear(0),
            1 => TopK((77, -0.680), (11, -0.685), (201, -4.0)),
            _ => TopK((engineTokens[s], -0.1), (300 + s, -3.0), (400 + s, -5.0)),
        });
        return (reference, engine);
    }

    [Fact]
    public void A_near_tie_at_step_1_no_longer_ends_the_check_a_wrong_engine_after_it_fails()
    {
        // Teacher-forced on the reference's tokens, the engine picks the reference's token but its logprob is 0.37 nats off.
        foreach (bool withOracle in new[] { false, true })
        {
            var (reference, engine) = NearTieAtStep1(withOracle);
            var forced = Sequence(RefTokens, s => s == 3 ? Clear(s, shift: -0.37) : s == 1 ? TopK((11, -0.690), (77, -0.697), (201, -4.0)) : Clear(s));
            var before = TokenComparison.Run(reference, engine, logprobTolerance: 5e-2);
            Assert.True(before.Passed, before.ToString());                              // what passed before: the tie ended the check
            Assert.Contains("not compared", before.Reason);

            var report = TokenComparison.Run(reference, engine, logprobTolerance: 5e-2, engineForced: forced, oracleBound: OracleBound.BFloat16);
            Assert.False(report.Passed, report.ToString());
            Assert.Equal(1, report.FirstDivergentStep);
            Assert.Equal(4, report.ForcedSteps);
            Assert.Contains("step 3", report.Reason);
            Assert.Contains(withOracle ? "float64 oracle" : "tolerance", report.Reason);
        }
    }

    [Fact]
    public void A_correct_engine_after_a_near_tie_passes_on_every_forced_step()
    {
        var (reference, engine) = NearTieAtStep1(withOracle: true);
        var forced = Sequence(RefTokens, s => s == 1 ? TopK((11, -0.690), (77, -0.697), (201, -4.0)) : Clear(s, shift: 0.004));
        var report = TokenComparison.Run(reference, engine, engineForced: forced, oracleBound: OracleBound.BFloat16);
        Assert.True(report.Passed, report.ToString());
        Assert.Equal(TokenVerdict.AcceptedDivergence, report.Verdict);
        Assert.Contains("the 4 later steps compared teacher-forced", report.Reason);
    }

    [Fact]
    public void A_forced_step_whose_clear_reference_token_the_engine_does_not_pick_fails()
    {
        var (reference, engine) = NearTieAtStep1(withOracle: true);
        var forcedTokens = (long[])RefTokens.Clone();
        forcedTokens[4] = 104;                                                           // 1.8 nats below the reference's choice
        var forced = Sequence(forcedTokens, s => s == 4 ? TopK((104, -0.15), (14, -0.25), (204, -4.0)) : Clear(s));
        var report = TokenComparison.Run(reference, engine, engineForced: forced, oracleBound: OracleBound.BFloat16);
        Assert.False(report.Passed, report.ToString());
        Assert.Contains("step 4 (teacher-forced): tokens differ (reference 14, engine 104), not accepted", report.Reason);
    }

    [Fact]
    public void Noise_of_a_1_1B_bf16_model_passes_under_the_oracle_where_the_fixed_005_nats_cried_wolf()
    {
        // The TinyLlama-1.1B-dims compare: every module at the reference's own error, a matched step's logprobs
        // 0.063 nats apart. The reference is 0.04 off the float64 oracle, the engine 0.023 the other way.
        var reference = Sequence(RefTokens, s => Clear(s), s => s == 2 ? -0.04 : 0.001);
        var engine = Sequence(RefTokens, s => s == 2 ? Clear(s, shift: -0.063) : Clear(s));
        var fixedTolerance = TokenComparison.Run(Sequence(RefTokens, s => Clear(s)), engine, logprobTolerance: 5e-2);
        Assert.False(fixedTolerance.Passed);                                            // the false alarm
        var report = TokenComparison.Run(reference, engine, oracleBound: OracleBound.BFloat16);
        Assert.True(report.Passed, report.ToString());
        Assert.NotNull(report.OracleLogprobBound);
        Assert.True(report.EngineOracleError <= 2 * report.ReferenceOracleError, report.ToString());
    }

    [Fact]
    public void An_engine_off_the_oracle_by_more_than_C_times_the_reference_fails_even_with_identical_tokens()
    {
        var reference = Sequence(RefTokens, s => Clear(s), _ => 0.01);
        var engine = Sequence(RefTokens, s => s == 5 ? Clear(s, shift: 0.05) : Clear(s));
        var report = TokenComparison.Run(reference, engine, logprobTolerance: 1, oracleBound: OracleBound.BFloat16);
        Assert.False(report.Passed, report.ToString());
        Assert.Contains("step 5", report.Reason);
    }
}
