using Harness.Reports;

namespace Harness.Tests.Correctness.Reports;

/// <summary>Baseline comparison: growth over the factor and pass to fail are regressions; added and removed ids are listed.</summary>
public class BaselineComparisonTests
{
    private static ScenarioRecord Scenario(string id, double relL2, bool passed = true) => new(
        id, "tiny-llama", "tp1", "fp32", "input-ids", null, false, passed, "synthetic", 1.0, null, null,
        [
            new ModuleRecord("model.layers.0", 0, "model.layers.0 (rank 0)", [2, 4], [2, 4], relL2, relL2, relL2 / 10, 0, 8,
                new ToleranceRecord("float32", 1.3e-6, 1e-5), ModuleRecord.Verdicts.Pass, ""),
            new ModuleRecord("model.layers.1", 0, "model.layers.1 (rank 0)", [2, 4], [2, 4], relL2, relL2, relL2, 0, 8,
                new ToleranceRecord("float32", 1.3e-6, 1e-5), ModuleRecord.Verdicts.Pass, ""),
        ],
        null);

    [Fact]
    public void Tenfold_growth_is_a_regression_and_one_and_a_half_fold_is_not()
    {
        var baseline = SyntheticScenarios.Report(Scenario("a", 1e-6), Scenario("b", 1e-6), Scenario("gone", 1e-6));
        var current = SyntheticScenarios.Report(Scenario("a", 1e-5), Scenario("b", 1.5e-6), Scenario("new", 1e-3));
        var cmp = BaselineComparison.Compare(current, baseline, 2.0);

        var a = cmp.Scenarios.Single(d => d.Id == "a");
        Assert.True(a.Regression);
        Assert.Equal(10, a.Growth!.Value, 6);
        Assert.Contains("grew 10x", a.Reason);
        var b = cmp.Scenarios.Single(d => d.Id == "b");
        Assert.False(b.Regression);
        Assert.Equal(1.5, b.Growth!.Value, 6);
        Assert.Equal(["a"], cmp.Regressions.Select(d => d.Id));
        Assert.Equal(["new"], cmp.Added);
        Assert.Equal(["gone"], cmp.Removed);
        Assert.Equal(baseline.GeneratedAt, cmp.BaselineGeneratedAt);
    }

    [Fact]
    public void Pass_to_fail_is_a_regression_and_fail_to_pass_is_not()
    {
        var baseline = SyntheticScenarios.Report(Scenario("broke", 1e-6), Scenario("fixed", 1e-6, passed: false));
        var current = SyntheticScenarios.Report(Scenario("broke", 1e-6, passed: false), Scenario("fixed", 1e-6));
        var cmp = BaselineComparison.Compare(current, baseline);
        Assert.Equal(["broke"], cmp.Regressions.Select(d => d.Id));
        Assert.Contains("pass to fail", cmp.Scenarios[0].Reason);
        Assert.Contains("fixed", cmp.Scenarios[1].Reason);
    }

    [Fact]
    public void Mutation_check_error_growth_is_not_a_regression()
    {
        var check = Scenario("m", 1e-1) with { ExpectFailure = true };
        var cmp = BaselineComparison.Compare(SyntheticScenarios.Report(check), SyntheticScenarios.Report(check with { Modules = Scenario("m", 1e-3).Modules }));
        Assert.False(Assert.Single(cmp.Scenarios).Regression);
    }

    [Fact]
    public void Errors_below_the_floor_do_not_regress()
    {
        var cmp = BaselineComparison.Compare(SyntheticScenarios.Report(Scenario("a", 1e-13)), SyntheticScenarios.Report(Scenario("a", 0)));
        Assert.False(Assert.Single(cmp.Scenarios).Regression);
    }

    [Fact]
    public void Baseline_round_trips_through_report_json()
    {
        using var dir = new SyntheticScenarios.TempDir();
        var baseline = SyntheticScenarios.Report(Scenario("a", 1e-6), Scenario("gone", 1e-6));
        var written = ReportWriter.WriteAll(SyntheticScenarios.Report(Scenario("a", 1e-5), Scenario("new", 1e-6)), dir.Path, baseline, 3.0);
        var loaded = AccuracyReport.Load(dir.File(ReportWriter.JsonFile)).Baseline!;
        Assert.Equal(3.0, loaded.GrowthFactor);
        Assert.Equal(1, loaded.RegressionCount);
        Assert.Equal(written.Baseline!.Scenarios, loaded.Scenarios);
        Assert.Equal(["new"], loaded.Added);
        Assert.Equal(["gone"], loaded.Removed);
    }
}
