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
    public static AccuracyReport WriteAll(AccuracyReport report, string directory, AccuracyReport? baseline = null, double growthFactor = 2.0)
    {
        ArgumentNullException.ThrowIfNull(report);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (baseline is not null) report = report with { Baseline = BaselineComparison.Compare(report, baseline, growthFactor) };
        Directory.CreateDirectory(directory);
        WriteAtomically(Path.Join(directory, JsonFile), ReportJson.Write(report));
        using (var junit = new MemoryStream())
        {
            JUnitWriter.Write(report, junit);
            WriteAtomically(Path.Join(directory, JUnitFile), junit.ToArray());
        }
        WriteAtomically(Path.Join(directory, HtmlFile), new UTF8Encoding(false).GetBytes(HtmlReportWriter.Render(report)));
        return report;
    }

    /// <summary>Writes to a temporary file beside the target and renames it, so a reader never sees half a report.</summary>
    private static void WriteAtomically(string path, byte[] bytes)
    {
        string tmp = path + ".tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, path, overwrite: true);
    }
}
