using System.Globalization;
using System.Text;
using static Harness.Reports.HtmlReportWriter;

namespace Harness.Reports;

/// <summary>One scenario's section of index.html: verdict and reason, the layer plot, the module table, the token alignment.</summary>
internal static class HtmlScenarioSection
{
    public static void Append(StringBuilder sb, ScenarioRecord s, int position)
    {
        var ci = CultureInfo.InvariantCulture;
        sb.Append(ci, $"<section class=\"scenario {(s.Passed ? "passed" : "failed")}{(s.ExpectFailure ? " expect-failure" : "")}\" id=\"scenario-{position}\" data-id=\"{H(s.Id)}\">\n")
          .Append("<h2>").Append(H(s.Id)).Append(ci, $" <span class=\"badge {(s.Passed ? "pass" : "fail")}\">{H(VerdictText(s))}</span></h2>\n")
          .Append("<p class=\"reason\">").Append(H(s.Reason)).Append("</p>\n")
          .Append("<p class=\"meta\">")
          .Append(H($"model {s.Model}, layout {s.Layout}, dtype {s.Dtype}, input {s.Input}, fault {s.Fault ?? "none"}"))
          .Append(H($"; {Secs(s.ElapsedSeconds)}; first bad module {s.FirstBadModule ?? "-"}"))
          .Append("</p>\n");
        if (s.EngineError is not null) sb.Append("<p class=\"engine-error\">engine error: <code>").Append(H(s.EngineError)).Append("</code></p>\n");
        sb.Append(LayerPlot.Render(s)).Append('\n');
        StepGrid(sb, s);
        Modules(sb, s);
        Tokens(sb, s.Tokens);
        sb.Append("</section>\n");
    }

    private static void Modules(StringBuilder sb, ScenarioRecord s)
    {
        var ci = CultureInfo.InvariantCulture;
        int failed = s.Modules.Count(m => m.Failed);
        sb.Append(s.Passed && !s.ExpectFailure ? "<details>" : "<details open>")
          .Append(ci, $"<summary>{s.Modules.Count} module records, {failed} failing</summary>\n")
          .Append("<table class=\"modules\"><thead><tr><th>#</th><th>module (rank, slice)</th><th>engine shape</th><th>expected shape</th>")
          .Append("<th>max abs</th><th>max rel</th><th>rel L2</th><th>mismatched</th>")
          .Append("<th>engine vs float64</th><th>reference's own</th><th>bound</th><th>margin</th><th>tolerance</th><th>verdict</th></tr></thead>\n<tbody>\n");
        for (int i = 0; i < s.Modules.Count; i++)
        {
            var m = s.Modules[i];
            string cls = m.Failed ? "fail" : m.Verdict == ModuleRecord.Verdicts.Extra ? "extra" : "pass";
            sb.Append(ci, $"<tr class=\"{cls}\" data-module=\"{H(m.Module)}\" data-rank=\"{m.Rank}\"><td class=\"num\">{i}</td>")
              .Append("<td>").Append(H(m.Label)).Append(m.Note.Length > 0 && m.Failed ? "<br><small>" + H(m.Note) + "</small>" : "").Append("</td>")
              .Append("<td>").Append(Shape(m.EngineShape)).Append("</td><td>").Append(Shape(m.ExpectedShape)).Append("</td>")
              .Append("<td class=\"num\">").Append(Sci(m.MaxAbs)).Append("</td><td class=\"num\">").Append(Sci(m.MaxRel))
              .Append("</td><td class=\"num\">").Append(Sci(m.RelL2)).Append("</td><td class=\"num\">")
              .Append(m.Mismatches is long mm ? H(string.Create(ci, $"{mm} / {m.Total}")) : "-").Append("</td>")
              .Append("<td class=\"num\">").Append(Sci(m.Oracle?.EngineRelL2)).Append("</td><td class=\"num\">").Append(Sci(m.Oracle?.ReferenceRelL2))
              .Append("</td><td class=\"num\">").Append(Sci(m.Oracle?.L2Bound)).Append("</td><td class=\"num\">")
              .Append(m.Oracle is { } oc ? H(oc.Margin.ToString("G3", ci)) : "-").Append("</td><td>")
              .Append(m.Oracle is not null ? "oracle" : m.Tolerance is { } t ? H(string.Create(ci, $"{t.Name} (rtol {t.Rtol:G3}, atol {t.Atol:G3})")) : "-")
              .Append(ci, $"</td><td class=\"verdict\">{H(m.Verdict)}</td></tr>\n");
        }
        sb.Append("</tbody></table></details>\n");
    }

    /// <summary>
    /// Every decode step judged per module: a row per module, a column per decode step, each cell the smallest oracle margin
    /// over the module's rank records at that step (red: a failing record); the first divergent (step, module, rank) above.
    /// </summary>
    private static void StepGrid(StringBuilder sb, ScenarioRecord s)
    {
        if (!s.StepsJudged) return;
        var ci = CultureInfo.InvariantCulture;
        var rows = s.Modules.Where(m => m.Step > 0 && m.Verdict != ModuleRecord.Verdicts.Extra).ToList();
        var modules = rows.Select(m => m.Module).Distinct(StringComparer.Ordinal).ToList();
        var steps = rows.Select(m => m.Step).Distinct().Order().ToList();
        sb.Append("<div class=\"decode-steps\">\n<h3>Decode steps, module by module</h3>\n<p>")
          .Append(H("Engine and reference teacher-forced on the reference's tokens; each cell is the oracle margin (bound / observed, above 1 passes) at that step, the smallest over ranks."))
          .Append(s.FirstDivergentStep is { } d
              ? H(string.Create(ci, $" First divergent (step, module, rank): ({d.Step}, {d.Module}, {d.Rank})."))
              : H(" Every step within the bound."))
          .Append("</p>\n<table class=\"step-grid\"><thead><tr><th>module \\ step</th>");
        foreach (var st in steps) sb.Append(ci, $"<th>{st}</th>");
        sb.Append("</tr></thead>\n<tbody>\n");
        foreach (var module in modules)
        {
            sb.Append("<tr><td>").Append(H(module)).Append("</td>");
            foreach (var st in steps)
            {
                var cell = rows.Where(m => m.Step == st && m.Module == module).ToList();
                if (cell.Count == 0) { sb.Append("<td>-</td>"); continue; }
                bool failed = cell.Any(m => m.Failed);
                var margins = cell.Select(m => m.Oracle?.Margin).OfType<double>().ToList();
                string text = margins.Count > 0 ? margins.Min().ToString("G3", ci) : failed ? cell.First(m => m.Failed).Verdict : "pass";
                sb.Append(ci, $"<td class=\"num {(failed ? "fail" : "pass")}\" data-step=\"{st}\" title=\"{H(string.Join("; ", cell.Select(m => $"{m.Label}: {m.Verdict}")))}\">{H(text)}</td>");
            }
            sb.Append("</tr>\n");
        }
        sb.Append("</tbody></table>\n</div>\n");
    }

    private static void Tokens(StringBuilder sb, TokenRecord? t)
    {
        var ci = CultureInfo.InvariantCulture;
        sb.Append("<div class=\"tokens\">\n<h3>Tokens</h3>\n");
        if (t is null)
        {
            sb.Append("<p>The engine produced no tokens.</p>\n</div>\n");
            return;
        }
        sb.Append(ci, $"<p class=\"token-verdict {(t.Passed ? "pass" : "fail")}\">{H(t.Verdict)}: {t.MatchedPrefix} of {t.ReferenceLength} reference steps matched (engine generated {t.EngineLength}); {H(t.Reason)}</p>\n");
        sb.Append("<table class=\"alignment\"><thead><tr><th>step</th><th>reference</th><th>engine</th></tr></thead>\n<tbody>\n");
        if (t.ReferenceTokens is { } rt && t.EngineTokens is { } et)
        {
            // Without a divergent step, sequences of different lengths go wrong at the first step only one side has.
            int? firstBad = t.FirstDivergentStep ?? (rt.Count != et.Count ? t.MatchedPrefix : null);
            for (int step = 0; step < Math.Max(rt.Count, et.Count); step++)
            {
                string cls = step == firstBad ? "divergent" : step < t.MatchedPrefix ? "match" : "after";
                Row(sb, cls, step, step < rt.Count ? rt[step].ToString(ci) : "-", step < et.Count ? et[step].ToString(ci) : "-");
            }
        }
        else
        {
            if (t.MatchedPrefix > 0)
                sb.Append(ci, $"<tr class=\"token match\" data-step=\"0\"><td>0..{t.MatchedPrefix - 1}</td><td colspan=\"2\">{t.MatchedPrefix} matching tokens (ids not recorded)</td></tr>\n");
            if (t.FirstDivergentStep is int step)
                Row(sb, "divergent", step, t.ReferenceToken?.ToString(ci) ?? "-", t.EngineToken?.ToString(ci) ?? "-");
        }
        sb.Append("</tbody></table>\n");
        if (t.FirstDivergentStep is int s && (t.ReferenceTopK.Count > 0 || t.EngineTopK.Count > 0))
        {
            sb.Append(ci, $"<table class=\"topk\" data-step=\"{s}\"><caption>top-k at step {s} (most likely first; underlined: the chosen token)</caption>")
              .Append("<thead><tr><th>rank</th><th>reference token</th><th>logprob</th><th>engine token</th><th>logprob</th></tr></thead>\n<tbody>\n");
            for (int i = 0; i < Math.Max(t.ReferenceTopK.Count, t.EngineTopK.Count); i++)
            {
                sb.Append(ci, $"<tr><td class=\"num\">{i + 1}</td>");
                Entry(sb, i < t.ReferenceTopK.Count ? t.ReferenceTopK[i] : null, t.ReferenceToken);
                Entry(sb, i < t.EngineTopK.Count ? t.EngineTopK[i] : null, t.EngineToken);
                sb.Append("</tr>\n");
            }
            sb.Append("</tbody></table>\n");
        }
        sb.Append("</div>\n");
    }

    private static void Row(StringBuilder sb, string cls, int step, string reference, string engine) =>
        sb.Append(CultureInfo.InvariantCulture, $"<tr class=\"token {cls}\" data-step=\"{step}\"><td class=\"num\">{step}</td><td>{H(reference)}</td><td>{H(engine)}</td></tr>\n");

    private static void Entry(StringBuilder sb, TopKEntry? e, long? chosen)
    {
        if (e is null) { sb.Append("<td></td><td></td>"); return; }
        var ci = CultureInfo.InvariantCulture;
        sb.Append(e.Token == chosen ? "<td class=\"chosen\">" : "<td>").Append(e.Token.ToString(ci)).Append("</td>")
          .Append("<td class=\"num\">").Append(double.IsFinite(e.Logprob) ? e.Logprob.ToString("F4", ci) : "-").Append("</td>");
    }

    private static string Shape(int[]? shape) => shape is null ? "-" : "[" + string.Join(", ", shape) + "]";
}
