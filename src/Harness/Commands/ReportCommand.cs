using System.CommandLine;
using Harness.Reports;

namespace Harness.Commands;

/// <summary>
/// `harness report --from report.json --out DIR [--baseline FILE] [--growth-factor X]`: re-renders report.json,
/// junit.xml and index.html from an existing report.json, e.g. to compare last night's report with the one before.
/// Exit 0 when every scenario passed and no regression against the baseline was flagged, 1 otherwise, 2 on bad input.
/// </summary>
internal static class ReportCommand
{
    /// <summary>The verb; <paramref name="through"/> wraps each report file's stream (the tests' slow writes; null: none).</summary>
    public static Command Create(Func<Stream, Stream>? through = null)
    {
        var from = new Option<string>("--from") { Description = "The report.json to render.", HelpName = "FILE", Required = true };
        var output = new Option<string>("--out") { Description = "Folder for report.json, junit.xml and index.html.", HelpName = "DIR", Required = true };
        var baseline = new Option<string?>("--baseline") { Description = "An earlier report.json to compare errors with.", HelpName = "FILE" };
        var growth = CliInputs.GrowthFactor("How much a scenario's error may grow over the baseline before it is flagged.");
        var command = new Command("report", "Re-render an accuracy report (report.json, junit.xml, index.html) from a report.json, optionally against a baseline.")
        {
            from, output, baseline, growth,
        };
        command.SetAction(r => Run(r.GetValue(from)!, r.GetValue(output)!, r.GetValue(baseline), r.GetValue(growth), through));
        return command;
    }

    public static int Run(string from, string output, string? baselinePath, double growthFactor, Func<Stream, Stream>? through = null)
    {
        // A bad file is an InputException naming it (and the field): the CLI prints that line and exits 2. The output
        // folder is checked first (empty, a file, a device, unwritable: exit 2 before anything is read).
        var folder = CliInputs.OutputFolder(output, "--out");
        var report = AccuracyReport.Load(from);
        var baseline = baselinePath is null ? null : AccuracyReport.Load(baselinePath);
        var written = ReportWriter.WriteAll(report, folder, baseline, growthFactor, through);
        Console.WriteLine($"{report.PassedCount} passed, {report.FailedCount} failed; report written to {folder}");
        if (written.Baseline is { } b)
            Console.WriteLine($"against the baseline of {b.BaselineGeneratedAt:u}: {b.RegressionCount} regression(s) (growth factor {growthFactor})");
        return report.Passed && (written.Baseline?.RegressionCount ?? 0) == 0 ? ExitCodes.Ok : ExitCodes.Failed;
    }
}
