using System.Text;

namespace Harness.Reports;

/// <summary>
/// Writes a report's three files into a directory: report.json (<see cref="ReportJson"/>), junit.xml
/// (<see cref="JUnitWriter"/>) and index.html (<see cref="HtmlReportWriter"/>, whose doc comment lists the page's
/// stable ids and classes). With a baseline report, the comparison (<see cref="BaselineComparison.Compare"/>) is added
/// to report.json and to the page's #baseline section.
/// </summary>
public static class ReportWriter
{
    public const string JsonFile = "report.json";
    public const string JUnitFile = "junit.xml";
    public const string HtmlFile = "index.html";

    /// <summary>Writes the three files (creating the directory) and returns the report as written, baseline comparison included.</summary>
    public static AccuracyReport WriteAll(AccuracyReport report, string directory, AccuracyReport? baseline = null, double growthFactor = 2.0, Func<Stream, Stream>? through = null)
    {
        ArgumentNullException.ThrowIfNull(report);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (baseline is not null) report = report with { Baseline = BaselineComparison.Compare(report, baseline, growthFactor) };
        Directory.CreateDirectory(directory);
        byte[] junit;
        using (var stream = new MemoryStream())
        {
            JUnitWriter.Write(report, stream);
            junit = stream.ToArray();
        }
        // Each file goes to a temporary name and all are renamed at the end, under the folder's writer lock: a run killed
        // while writing leaves the previous report (or none), never half a file; two runs writing the folder at once leave
        // the three files of one of them. through: AtomicFile's (the tests' slow writes).
        Engine.IO.AtomicFile.WriteAll([
            (Path.Join(directory, JsonFile), ReportJson.Write(report)),
            (Path.Join(directory, JUnitFile), junit),
            (Path.Join(directory, HtmlFile), new UTF8Encoding(false).GetBytes(HtmlReportWriter.Render(report))),
        ], through);
        return report;
    }
}
