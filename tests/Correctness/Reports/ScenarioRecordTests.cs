using Harness.Reports;

namespace Harness.Tests.Correctness.Reports;

/// <summary>ScenarioRecord.From: verdicts with and without an expected failure, the one-line reason, modules and tokens.</summary>
public class ScenarioRecordTests
{
    [Fact]
    public void Passing_scenario_passes_with_every_module_and_the_full_token_lists()
    {
        var s = SyntheticScenarios.Record(fail: false);
        Assert.True(s.Passed);
        Assert.Equal("pass", s.Verdict);
        Assert.Equal("llama/tp2/input-ids/fp32", s.Id);
        Assert.Equal(8, s.Modules.Count);
        Assert.All(s.Modules, m => Assert.Equal(ModuleRecord.Verdicts.Pass, m.Verdict));
        Assert.Null(s.FirstBadModule);
        Assert.Equal(1.25, s.ElapsedSeconds);
        Assert.Equal([10L, 11, 12, 13, 14], s.Tokens!.ReferenceTokens!);
        Assert.Equal(TokenRecord.Identical, s.Tokens.Verdict);
        Assert.DoesNotContain('\n', s.Reason);
        Assert.True(s.MaxRelL2 > 0);
    }

    [Fact]
    public void Failing_scenario_names_the_first_bad_module_and_rank_in_one_line()
    {
        var s = SyntheticScenarios.Record(fail: true);
        Assert.False(s.Passed);
        Assert.True(s.ComparisonFailed);
        Assert.Equal(SyntheticScenarios.BadModule, s.FirstBadModule);
        Assert.StartsWith("model.layers.1.mlp (rank 1, dim 1 [4, 8) of 8): fail:", s.Reason);
        Assert.DoesNotContain('\n', s.Reason);
        var bad = s.Modules.Single(m => m.Failed);
        Assert.Equal((SyntheticScenarios.BadModule, 1), (bad.Module, bad.Rank));
        Assert.Equal(4, bad.Mismatches);
        Assert.Equal(16, bad.Total);
        Assert.Equal("float32", bad.Tolerance!.Name);
        Assert.Equal(3, s.Tokens!.FirstDivergentStep);
        Assert.Equal(TokenRecord.Failed, s.Tokens.Verdict);
        Assert.Equal(SyntheticScenarios.DivergentEngineToken, s.Tokens.EngineToken);
        Assert.Equal(SyntheticScenarios.DivergentEngineToken, s.Tokens.EngineTopK[0].Token);
    }

    [Fact]
    public void Expected_failure_that_fails_is_a_pass_and_one_that_passes_is_a_fail()
    {
        var caught = SyntheticScenarios.Record(fail: true, expectFailure: true, fault: "sp-residual");
        Assert.True(caught.Passed);
        Assert.True(caught.ComparisonFailed);
        Assert.StartsWith("failed as expected: model.layers.1.mlp", caught.Reason);
        Assert.Equal("llama/tp2/input-ids/fp32/fault=sp-residual", caught.Id);

        var missed = SyntheticScenarios.Record(fail: false, expectFailure: true, fault: "sp-residual");
        Assert.False(missed.Passed);
        Assert.Contains("expected the comparison to fail under fault sp-residual, but it passed", missed.Reason);
    }
}
