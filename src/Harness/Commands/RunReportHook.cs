using Harness.Reports;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// The one place `harness run --report DIR` writes its report: report.json, junit.xml and index.html through
/// <see cref="ReportWriter.WriteAll"/>, with the versions of the reference (live) or of the recording (offline), and
/// the comparison with a baseline report.json when given.
/// </summary>
public static class RunReportHook
{
    public const string FileName = "report.json";

    public static AccuracyReport Write(IReadOnlyList<ScenarioRunner.Outcome> outcomes, string directory, string? baselinePath, double growthFactor, ScenarioContext context)
    {
        var versions = context.IsLive ? context.Versions() : RecordedVersions(context, outcomes);
        var environment = ReportEnvironment.Capture(
            versions.GetValueOrDefault("python", "n/a"),
            versions.GetValueOrDefault("torch", "n/a"),
            versions.GetValueOrDefault("transformers", "n/a"));
        var report = AccuracyReport.Create(outcomes.Select(o => ScenarioRecord.From(o.Result)).ToList(), environment);
        var baseline = baselinePath is null ? null : AccuracyReport.Load(baselinePath);
        return ReportWriter.WriteAll(report, directory, baseline, growthFactor);
    }

    // Offline: the versions recorded in the first reference file used (fixtures store them in their metadata).
    private static IReadOnlyDictionary<string, string> RecordedVersions(ScenarioContext context, IReadOnlyList<ScenarioRunner.Outcome> outcomes)
    {
        foreach (var o in outcomes)
        {
            var path = Fixtures.BundlePath(context.FixturesDirectory, o.Result.Scenario.ReferenceKey);
            if (!File.Exists(path)) continue;
            using var file = Engine.IO.SafetensorsFile.Open(path);
            var meta = file.Metadata;
            return new Dictionary<string, string>
            {
                ["python"] = meta.GetValueOrDefault("python", "n/a") + " (recorded)",
                ["torch"] = meta.GetValueOrDefault("torch", "n/a") + " (recorded)",
                ["transformers"] = meta.GetValueOrDefault("transformers", "n/a") + " (recorded)",
            };
        }
        return new Dictionary<string, string>();
    }
}
