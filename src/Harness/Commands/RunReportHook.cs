using System.Text.Json;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// The one place `harness run --report DIR` writes its report. For now a minimal DIR/report.json (Utf8JsonWriter, no
/// reflection: the CLI is trimmed); to be replaced by Harness.Reports' ReportWriter.WriteAll(AccuracyReport, dir,
/// baseline, growthFactor) when that lands: the options (--report, --baseline, --growth-factor) are parsed and
/// validated already and arrive here unchanged.
/// </summary>
public static class RunReportHook
{
    public const string FileName = "report.json";

    public static void Write(IReadOnlyList<ScenarioRunner.Outcome> outcomes, string directory, string? baselinePath, double growthFactor, ScenarioContext context)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, FileName);
        using var stream = File.Create(path);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        w.WriteStartObject();
        w.WriteString("created_at", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture));
        w.WriteString("mode", context.IsLive ? "live" : "offline");
        w.WriteString("engine_version", CliSupport.EngineVersion);
        if (baselinePath is null) w.WriteNull("baseline");
        else w.WriteString("baseline", Path.GetFullPath(baselinePath));
        w.WriteNumber("growth_factor", growthFactor);
        w.WriteNumber("passed", outcomes.Count(o => o.Result.Passed));
        w.WriteNumber("failed", outcomes.Count(o => !o.Result.Passed));
        w.WriteStartArray("scenarios");
        foreach (var o in outcomes)
        {
            var r = o.Result;
            w.WriteStartObject();
            w.WriteString("id", r.Scenario.Id);
            w.WriteString("verdict", r.Passed ? "pass" : "fail");
            w.WriteBoolean("comparison_passed", r.ComparisonPassed);
            w.WriteString("reason", r.Reason);
            if (r.FirstBadModule is null) w.WriteNull("first_bad_module");
            else w.WriteString("first_bad_module", r.FirstBadModule);
            if (r.Scenario.Fault is null) w.WriteNull("fault");
            else w.WriteString("fault", r.Scenario.Fault);
            w.WriteNumber("elapsed_s", Math.Round(r.Elapsed.TotalSeconds, 3));
            if (o.Drift is { } d)
            {
                w.WriteStartObject("drift");
                w.WriteNumber("max_relative_l2", double.IsFinite(d.MaxRelativeL2) ? d.MaxRelativeL2 : -1);
                w.WriteBoolean("tokens_equal", d.TokensEqual);
                w.WriteBoolean("drifted", d.Drifted);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }
}
