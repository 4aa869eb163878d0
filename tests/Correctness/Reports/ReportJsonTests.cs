using System.Text;
using System.Text.Json;
using Harness.Reports;

namespace Harness.Tests.Correctness.Reports;

/// <summary>report.json: snake_case fields, NaN as null, and AccuracyReport.Load reading back what WriteAll wrote.</summary>
public class ReportJsonTests
{
    [Fact]
    public void Report_json_round_trips_with_the_same_values()
    {
        using var dir = new SyntheticScenarios.TempDir();
        var report = SyntheticScenarios.Report(SyntheticScenarios.Record(fail: false), SyntheticScenarios.Record(fail: true));
        ReportWriter.WriteAll(report, dir.Path);
        var bytes = File.ReadAllBytes(dir.File(ReportWriter.JsonFile));

        var loaded = AccuracyReport.Load(dir.File(ReportWriter.JsonFile));
        Assert.Equal(bytes, ReportJson.Write(loaded)); // every written field survives the trip
        Assert.Equal(report.GeneratedAt, loaded.GeneratedAt);
        Assert.Equal(DateTimeKind.Utc, loaded.GeneratedAt.Kind);
        Assert.Equal(report.Environment, loaded.Environment);
        Assert.Null(loaded.Baseline);
        Assert.Equal(2, loaded.Scenarios.Count);
        for (int i = 0; i < 2; i++)
        {
            ScenarioRecord a = report.Scenarios[i], b = loaded.Scenarios[i];
            Assert.Equal((a.Id, a.Model, a.Layout, a.Dtype, a.Input, a.Fault, a.ExpectFailure, a.Passed, a.Reason, a.ElapsedSeconds, a.EngineError, a.FirstBadModule),
                (b.Id, b.Model, b.Layout, b.Dtype, b.Input, b.Fault, b.ExpectFailure, b.Passed, b.Reason, b.ElapsedSeconds, b.EngineError, b.FirstBadModule));
            Assert.Equal(a.MaxRelL2, b.MaxRelL2);
            Assert.Equal(a.Modules.Count, b.Modules.Count);
            for (int j = 0; j < a.Modules.Count; j++)
            {
                ModuleRecord m = a.Modules[j], n = b.Modules[j];
                Assert.Equal((m.Module, m.Rank, m.Label, m.MaxAbs, m.MaxRel, m.RelL2, m.Mismatches, m.Total, m.Tolerance, m.Verdict, m.Note),
                    (n.Module, n.Rank, n.Label, n.MaxAbs, n.MaxRel, n.RelL2, n.Mismatches, n.Total, n.Tolerance, n.Verdict, n.Note));
                Assert.Equal(m.EngineShape, n.EngineShape);
                Assert.Equal(m.ExpectedShape, n.ExpectedShape);
            }
            TokenRecord t = a.Tokens!, u = b.Tokens!;
            Assert.Equal(t.ReferenceTokens, u.ReferenceTokens);
            Assert.Equal(t.EngineTokens, u.EngineTokens);
            Assert.Equal((t.MatchedPrefix, t.FirstDivergentStep, t.ReferenceToken, t.EngineToken, t.Verdict, t.Reason, t.MaxLogprobDiff),
                (u.MatchedPrefix, u.FirstDivergentStep, u.ReferenceToken, u.EngineToken, u.Verdict, u.Reason, u.MaxLogprobDiff));
            Assert.Equal(t.ReferenceTopK, u.ReferenceTopK);
            Assert.Equal(t.EngineTopK, u.EngineTopK);
        }
    }

    [Fact]
    public void Fields_are_snake_case_and_non_finite_numbers_are_null()
    {
        var s = SyntheticScenarios.Record(fail: true);
        var nan = s with { Modules = [.. s.Modules, s.Modules[0] with { RelL2 = double.NaN, MaxAbs = double.PositiveInfinity }] };
        using var doc = JsonDocument.Parse(ReportJson.Write(SyntheticScenarios.Report(nan)));
        var root = doc.RootElement;
        Assert.Equal(ReportJson.SchemaVersion, root.GetProperty("schema_version").GetInt32());
        Assert.Equal("2025-01-02T03:04:05.6780000Z", root.GetProperty("generated_at").GetString());
        Assert.Equal("avx2-fma 6x16", root.GetProperty("environment").GetProperty("gemm_kernel").GetString());
        Assert.Equal(1, root.GetProperty("summary").GetProperty("failed").GetInt32());
        var scenario = root.GetProperty("scenarios")[0];
        Assert.Equal("fail", scenario.GetProperty("verdict").GetString());
        Assert.Equal(SyntheticScenarios.BadModule, scenario.GetProperty("first_bad_module").GetString());
        Assert.False(scenario.GetProperty("expect_failure").GetBoolean());
        var last = scenario.GetProperty("modules")[nan.Modules.Count - 1];
        Assert.Equal(JsonValueKind.Null, last.GetProperty("rel_l2").ValueKind);
        Assert.Equal(JsonValueKind.Null, last.GetProperty("max_abs").ValueKind);
        Assert.Equal(1.3e-6, last.GetProperty("tolerance").GetProperty("rtol").GetDouble());
        Assert.Equal(3, scenario.GetProperty("tokens").GetProperty("first_divergent_step").GetInt32());
        Assert.Equal(SyntheticScenarios.DivergentEngineToken, scenario.GetProperty("tokens").GetProperty("engine_top_k")[0].GetProperty("token").GetInt64());
    }

    [Fact]
    public void Malformed_report_names_the_field()
    {
        var e = Assert.Throws<FormatException>(() => ReportJson.Read(Encoding.UTF8.GetBytes("{\"schema_version\": 1, \"generated_at\": \"2025-01-01T00:00:00Z\"}")));
        Assert.Contains("environment", e.Message);
        Assert.Throws<FormatException>(() => ReportJson.Read(Encoding.UTF8.GetBytes("{not json")));
        Assert.Contains("schema_version", Assert.Throws<FormatException>(() => ReportJson.Read(Encoding.UTF8.GetBytes("{\"schema_version\": 2}"))).Message);
    }
}
