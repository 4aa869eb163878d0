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

    /// <summary>
    /// Reads a report.json. Any problem with the file (missing, not JSON, another schema_version, a field missing or of
    /// the wrong type) is an <see cref="Engine.IO.InputException"/> whose one-line message names the file and the field.
    /// </summary>
    public static AccuracyReport Load(string path)
    {
        if (string.IsNullOrEmpty(path)) throw new Engine.IO.InputException("\"\"", "an empty path is not a report file");
        var full = System.IO.Path.GetFullPath(path);
        // a regular file of at most ReportMaxBytes (a FIFO, /dev/zero or a loop of links is named as such: issue 24)
        var bytes = Engine.IO.InputFiles.ReadCapped(full, Engine.IO.InputFiles.ReportMaxBytes, "report file");
        try
        {
            return ReportJson.Read(bytes);
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or System.Text.Json.JsonException or OverflowException
                                      or KeyNotFoundException or ArgumentException)
        {
            var message = e.Message.Split('\n')[0];
            if (message.StartsWith("report.json: ", StringComparison.Ordinal)) message = message["report.json: ".Length..];
            else if (e is InvalidOperationException or OverflowException) message = $"a value has the wrong type or range ({message})";
            throw new Engine.IO.InputException(full, message, e);
        }
    }
}
