namespace Harness.Reports;

/// <summary>
/// The nightly accuracy report: when and where it was produced, one record per scenario, and (when the run was given
/// a baseline report) the comparison with it. <see cref="Load"/> reads back what <see cref="ReportWriter"/> wrote as
/// report.json.
/// </summary>
public sealed record AccuracyReport(DateTime GeneratedAt, ReportEnvironment Environment, IReadOnlyList<ScenarioRecord> Scenarios)
{
    /// <summary>The comparison with a baseline report; null when there was none.</summary>
    public BaselineComparison? Baseline { get; init; }

    /// <summary>The number of scenarios whose verdict is pass (expected failures that failed included).</summary>
    public int PassedCount => Scenarios.Count(s => s.Passed);

    public int FailedCount => Scenarios.Count - PassedCount;

    public bool Passed => FailedCount == 0;

    /// <summary>A report generated now (UTC) in this process's environment.</summary>
    public static AccuracyReport Create(IReadOnlyList<ScenarioRecord> scenarios, ReportEnvironment? environment = null) =>
        new(DateTime.UtcNow, environment ?? ReportEnvironment.Capture(), scenarios);

    /// <summary>Reads a report.json; throws <see cref="FormatException"/> naming the field when it is malformed.</summary>
    public static AccuracyReport Load(string path) => ReportJson.Read(File.ReadAllBytes(path));
}
