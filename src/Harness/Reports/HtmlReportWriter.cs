using System.Globalization;
using System.Net;
using System.Text;

namespace Harness.Reports;

/// <summary>
/// index.html: one self-contained page (inline &lt;style&gt;, inline SVG, no script, no external URL) that reads the
/// same with JavaScript disabled. Stable hooks for end-to-end tests:
/// <list type="bullet">
/// <item><c>#environment</c>: the header with versions, OS, CPU and GEMM kernel.</item>
/// <item><c>#summary</c>: the summary table; body rows <c>tr.pass</c>/<c>tr.fail</c> with <c>data-id</c>; <c>tfoot .total</c> the total line.</item>
/// <item><c>#baseline</c>: the baseline comparison, present only when a baseline was given; rows <c>tr.regression</c>/<c>tr.ok</c>
/// with <c>data-id</c>; <c>.added</c> and <c>.removed</c> lists.</item>
/// <item><c>.scenario[data-id=ID]</c>: one section per scenario, also <c>.scenario.passed</c> or <c>.scenario.failed</c>
/// (the scenario's verdict, expected failures applied) and <c>.expect-failure</c> for mutation checks; the anchor
/// <c>#scenario-N</c> (N = position in the report).</item>
/// <item><c>svg.layer-plot</c>: one per scenario (see <see cref="LayerPlot"/>); <c>table.modules</c> the module table, rows <c>tr.fail</c> for failing records.</item>
/// <item><c>.tokens</c>: the token alignment; rows <c>.token</c> with <c>data-step</c>, <c>.token.match</c> for matching steps,
/// <c>.token.divergent</c> the first divergent step, <c>.token.after</c> steps after it; <c>table.topk</c> both top-k lists
/// at the divergent step, <c>.chosen</c> on each side's chosen token.</item>
/// </list>
/// </summary>
public static class HtmlReportWriter
{
    public static string Render(AccuracyReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
          .Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
          .Append("<title>Harness accuracy report ").Append(H(Time(report.GeneratedAt))).Append("</title>\n")
          .Append("<style>\n").Append(HtmlStyle.Css).Append("</style>\n</head>\n<body>\n");
        Header(sb, report);
        Summary(sb, report);
        if (report.Baseline is { } b) HtmlBaselineSection.Append(sb, b);
        for (int i = 0; i < report.Scenarios.Count; i++) HtmlScenarioSection.Append(sb, report.Scenarios[i], i);
        sb.Append("</body>\n</html>\n");
        return sb.ToString();
    }

    private static void Header(StringBuilder sb, AccuracyReport r)
    {
        var e = r.Environment;
        sb.Append("<header id=\"environment\">\n<h1>Harness accuracy report</h1>\n")
          .Append(CultureInfo.InvariantCulture, $"<p class=\"overall {(r.Passed ? "pass" : "fail")}\">{(r.Passed ? "PASS" : "FAIL")}: {r.PassedCount} of {r.Scenarios.Count} scenarios passed</p>\n")
          .Append("<dl>");
        foreach (var (k, v) in new[]
        {
            ("generated (UTC)", Time(r.GeneratedAt)), ("engine", e.EngineVersion), ("python", e.PythonVersion), ("torch", e.TorchVersion),
            ("transformers", e.TransformersVersion), ("OS", e.Os), ("CPU", $"{e.CpuModel} ({e.ProcessorCount.ToString(CultureInfo.InvariantCulture)} processors)"),
            ("GEMM kernel", e.GemmKernel),
        })
            sb.Append("<div><dt>").Append(H(k)).Append("</dt><dd>").Append(H(v)).Append("</dd></div>");
        sb.Append("</dl>\n</header>\n");
    }

    private static void Summary(StringBuilder sb, AccuracyReport r)
    {
        var ci = CultureInfo.InvariantCulture;
        sb.Append("<h2>Summary</h2>\n<table id=\"summary\">\n<thead><tr><th>scenario</th><th>verdict</th><th>first bad module</th>")
          .Append("<th>max rel L2</th><th>tokens</th><th>time</th></tr></thead>\n<tbody>\n");
        for (int i = 0; i < r.Scenarios.Count; i++)
        {
            var s = r.Scenarios[i];
            sb.Append(ci, $"<tr class=\"{(s.Passed ? "pass" : "fail")}\" data-id=\"{H(s.Id)}\">")
              .Append(ci, $"<td><a href=\"#scenario-{i}\">{H(s.Id)}</a></td>")
              .Append("<td class=\"verdict\">").Append(H(VerdictText(s))).Append("</td>")
              .Append("<td>").Append(H(s.FirstBadModule ?? "-")).Append("</td>")
              .Append("<td class=\"num\">").Append(Sci(s.MaxRelL2)).Append("</td>")
              .Append("<td>").Append(H(s.Tokens?.Agreement ?? "n/a")).Append("</td>")
              .Append("<td class=\"num\">").Append(Secs(s.ElapsedSeconds)).Append("</td></tr>\n");
        }
        double total = r.Scenarios.Sum(s => double.IsFinite(s.ElapsedSeconds) ? s.ElapsedSeconds : 0);
        sb.Append("</tbody>\n<tfoot><tr class=\"total\"><td colspan=\"6\">")
          .Append(ci, $"{r.Scenarios.Count} scenarios: {r.PassedCount} passed, {r.FailedCount} failed")
          .Append(ci, $" ({r.Scenarios.Count(s => s.ExpectFailure && s.Passed)} mutation check(s) failed as expected); total time {Secs(total)}")
          .Append("</td></tr></tfoot>\n</table>\n");
    }

    /// <summary>"PASS", "FAIL", "PASS (failed as expected)" or "FAIL (expected failure, passed)".</summary>
    public static string VerdictText(ScenarioRecord s) => (s.Passed, s.ExpectFailure) switch
    {
        (true, false) => "PASS",
        (false, false) => "FAIL",
        (true, true) => "PASS (failed as expected)",
        (false, true) => "FAIL (expected failure, passed)",
    };

    internal static string H(string s) => WebUtility.HtmlEncode(s);

    internal static string Sci(double? v) => v is double d ? d.ToString("0.00E+00", CultureInfo.InvariantCulture) : "-";

    internal static string Secs(double s) => double.IsFinite(s) ? s.ToString("0.0", CultureInfo.InvariantCulture) + " s" : "-";

    internal static string Time(DateTime t) => t.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);
}
