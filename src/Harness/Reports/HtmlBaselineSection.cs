using System.Globalization;
using System.Text;
using static Harness.Reports.HtmlReportWriter;

namespace Harness.Reports;

/// <summary>The #baseline section of index.html: regressions first, then the other common scenarios, then added and removed ids.</summary>
internal static class HtmlBaselineSection
{
    public static void Append(StringBuilder sb, BaselineComparison b)
    {
        var ci = CultureInfo.InvariantCulture;
        sb.Append("<section id=\"baseline\">\n<h2>Baseline comparison</h2>\n")
          .Append(ci, $"<p class=\"{(b.RegressionCount == 0 ? "pass" : "fail")}\">{b.RegressionCount} regression{(b.RegressionCount == 1 ? "" : "s")} against the baseline")
          .Append(b.BaselineGeneratedAt is DateTime at ? " of " + H(Time(at)) : "")
          .Append(ci, $" (a regression: max rel L2 grew more than {b.GrowthFactor:G3}x, or pass went to fail); {b.Added.Count} added, {b.Removed.Count} removed</p>\n")
          .Append("<table><thead><tr><th>scenario</th><th>verdict (baseline &#8594; now)</th><th>max rel L2 baseline</th><th>max rel L2 now</th><th>growth</th><th>reason</th></tr></thead>\n<tbody>\n");
        foreach (var d in b.Scenarios.OrderByDescending(d => d.Regression))
            sb.Append(ci, $"<tr class=\"{(d.Regression ? "regression" : "ok")}\" data-id=\"{H(d.Id)}\"><td>{H(d.Id)}</td>")
              .Append(ci, $"<td>{H(d.BaselineVerdict)} &#8594; {H(d.CurrentVerdict)}</td><td class=\"num\">{Sci(d.BaselineMaxRelL2)}</td><td class=\"num\">{Sci(d.CurrentMaxRelL2)}</td>")
              .Append(ci, $"<td class=\"num\">{(d.Growth is double g && double.IsFinite(g) ? g.ToString("G3", ci) + "x" : "-")}</td><td>{H(d.Reason)}</td></tr>\n");
        sb.Append("</tbody></table>\n");
        List(sb, "added", "new scenarios (not in the baseline)", b.Added);
        List(sb, "removed", "removed scenarios (only in the baseline)", b.Removed);
        sb.Append("</section>\n");
    }

    private static void List(StringBuilder sb, string cls, string title, IReadOnlyList<string> ids)
    {
        sb.Append("<div class=\"").Append(cls).Append("\"><h3>").Append(H(title)).Append("</h3>");
        if (ids.Count == 0) sb.Append("<p>none</p>");
        else
        {
            sb.Append("<ul>");
            foreach (var id in ids) sb.Append("<li>").Append(H(id)).Append("</li>");
            sb.Append("</ul>");
        }
        sb.Append("</div>\n");
    }
}
