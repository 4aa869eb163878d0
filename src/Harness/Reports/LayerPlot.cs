using System.Globalization;
using System.Net;
using System.Text;

namespace Harness.Reports;

/// <summary>
/// A scenario's error-per-layer plot as inline SVG (class "layer-plot"): x is the module in forward order (one tick per
/// module, the name in a &lt;title&gt; tooltip), y is log10 of the relative L2 error floored at 1e-12, one polyline per
/// rank, a dashed horizontal line per distinct tolerance rtol, and failing records drawn as red points (red crosses at
/// the top edge for records with no finite error: missing, shape mismatch, NaN). Extra modules are not plotted. Needs
/// no script and no external resource; colours are attributes. It has no xmlns (inline SVG in HTML needs none), so the page holds no URL at all.
/// </summary>
public static class LayerPlot
{
    private const double Width = 760, Height = 260, Left = 64, Right = 72, Top = 16, Bottom = 44;
    private const double MinLog = -12;
    private static readonly string[] RankColors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"];
    private const string Red = "#d62728";

    public static string Render(ScenarioRecord scenario)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        var ci = CultureInfo.InvariantCulture;
        // the prefill's modules (decode steps judged per module have their own step-by-module grid: HtmlScenarioSection)
        var plotted = scenario.Modules.Where(m => m.Verdict != ModuleRecord.Verdicts.Extra && m.Step == 0).ToList();
        var modules = plotted.Select(m => m.Module).Distinct(StringComparer.Ordinal).ToList();
        var index = modules.Select((m, i) => (m, i)).ToDictionary(p => p.m, p => p.i, StringComparer.Ordinal);
        var rtols = plotted.Where(m => m.Tolerance is not null).Select(m => m.Tolerance!).DistinctBy(t => (t.Name, t.Rtol)).ToList();

        // With the float64 oracle: the engine's error against it per rank, and per module the reference's own error
        // (dotted) and the bound the engine had to meet (dashed red); without: the error against the reference and the
        // fixed policies' rtol lines.
        var oracleRows = plotted.Where(m => m.Oracle is not null).GroupBy(m => m.Module, StringComparer.Ordinal)
            .Select(g => (Module: g.Key, Own: g.Max(m => m.Oracle!.ReferenceRelL2), Bound: g.Min(m => m.Oracle!.L2Bound))).ToList();
        if (oracleRows.Count > 0) rtols = rtols.Where(t => plotted.Any(m => m.Oracle is null && m.Tolerance == t)).ToList();
        var logs = plotted.Select(m => m.PlottedError).OfType<double>().Where(double.IsFinite).Select(Log)
            .Concat(rtols.Select(t => Log(t.Rtol)))
            .Concat(oracleRows.SelectMany(o => new[] { o.Own, o.Bound }).Where(v => double.IsFinite(v) && v > 0).Select(Log))
            .Where(double.IsFinite).ToList();   // an infinite bound would never end the axis loop
        double yMin = logs.Count == 0 ? MinLog : Math.Max(MinLog, Math.Floor(logs.Min()));
        double yMax = logs.Count == 0 ? 0 : Math.Ceiling(logs.Max());
        if (yMax <= yMin) yMax = yMin + 1;
        double plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double X(int i) => Left + (modules.Count <= 1 ? plotW / 2 : i * plotW / (modules.Count - 1));
        double Y(double log) => Top + (yMax - Math.Clamp(log, yMin, yMax)) / (yMax - yMin) * plotH;
        string F(double v) => v.ToString("0.##", ci);

        var sb = new StringBuilder();
        sb.Append(ci, $"<svg class=\"layer-plot\" viewBox=\"0 0 {F(Width)} {F(Height)}\" width=\"{F(Width)}\" height=\"{F(Height)}\" role=\"img\">");
        sb.Append("<title>").Append(H($"relative L2 error per module, {scenario.Id}")).Append("</title>");
        sb.Append(ci, $"<rect x=\"{F(Left)}\" y=\"{F(Top)}\" width=\"{F(plotW)}\" height=\"{F(plotH)}\" fill=\"#fafafa\" stroke=\"#999\"/>");

        // Y axis: one gridline and label per decade (every other decade when there are many).
        int step = yMax - yMin > 12 ? 2 : 1;
        for (double d = yMin; d <= yMax + 1e-9; d += step)
        {
            sb.Append(ci, $"<line class=\"grid\" x1=\"{F(Left)}\" x2=\"{F(Left + plotW)}\" y1=\"{F(Y(d))}\" y2=\"{F(Y(d))}\" stroke=\"#e3e3e3\"/>");
            sb.Append(ci, $"<text x=\"{F(Left - 6)}\" y=\"{F(Y(d) + 4)}\" text-anchor=\"end\" font-size=\"11\">1e{d:0}</text>");
        }
        sb.Append(ci, $"<text class=\"axis-label\" transform=\"translate(14 {F(Top + plotH / 2)}) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">log10 relative L2 error</text>");
        sb.Append(ci, $"<text class=\"axis-label\" x=\"{F(Left + plotW / 2)}\" y=\"{F(Height - 8)}\" text-anchor=\"middle\" font-size=\"12\">module (forward order, {modules.Count} modules)</text>");

        // X axis: a tick per module with its name as tooltip; index labels where they fit.
        int labelEvery = Math.Max(1, (int)Math.Ceiling(modules.Count / 25.0));
        for (int i = 0; i < modules.Count; i++)
        {
            double x = X(i);
            sb.Append(ci, $"<g class=\"tick\"><title>{H($"{i}: {modules[i]}")}</title><line x1=\"{F(x)}\" x2=\"{F(x)}\" y1=\"{F(Top + plotH)}\" y2=\"{F(Top + plotH + 5)}\" stroke=\"#666\"/>");
            if (i % labelEvery == 0) sb.Append(ci, $"<text x=\"{F(x)}\" y=\"{F(Top + plotH + 17)}\" text-anchor=\"middle\" font-size=\"10\">{i}</text>");
            sb.Append("</g>");
        }

        foreach (var t in rtols)
        {
            double y = Y(Log(t.Rtol));
            sb.Append(ci, $"<g class=\"tolerance\"><title>{H($"tolerance {t.Name}: rtol {t.Rtol:G3}")}</title>");
            sb.Append(ci, $"<line x1=\"{F(Left)}\" x2=\"{F(Left + plotW)}\" y1=\"{F(y)}\" y2=\"{F(y)}\" stroke=\"{Red}\" stroke-dasharray=\"6 4\" stroke-width=\"1.2\"/>");
            sb.Append(ci, $"<text x=\"{F(Left + plotW + 4)}\" y=\"{F(y + 4)}\" font-size=\"10\" fill=\"{Red}\">rtol {H(t.Rtol.ToString("G2", ci))}</text></g>");
        }

        if (oracleRows.Count > 0)
        {
            string Line(Func<(string Module, double Own, double Bound), double> pick) => string.Join(' ', oracleRows
                .Select(o => (X: X(index[o.Module]), V: pick(o))).Select(p => $"{F(p.X)},{F(Y(Log(p.V)))}"));
            sb.Append(ci, $"<g class=\"tolerance oracle-bound\"><title>bound: C x the reference's own error + floor, per module</title>");
            sb.Append(ci, $"<polyline fill=\"none\" stroke=\"{Red}\" stroke-dasharray=\"6 4\" stroke-width=\"1.2\" points=\"{Line(o => o.Bound)}\"/></g>");
            sb.Append("<g class=\"reference-own-error\"><title>the reference's own error against the float64 oracle, per module</title>");
            sb.Append(ci, $"<polyline fill=\"none\" stroke=\"#444\" stroke-dasharray=\"2 3\" stroke-width=\"1.2\" points=\"{Line(o => o.Own)}\"/></g>");
        }

        var ranks = plotted.Select(m => m.Rank).Distinct().Order().ToList();
        foreach (var rank in ranks)
        {
            string color = RankColors[((rank % RankColors.Length) + RankColors.Length) % RankColors.Length];
            var points = plotted.Where(m => m.Rank == rank && m.PlottedError is double v && double.IsFinite(v))
                .Select(m => (X: X(index[m.Module]), Y: Y(Log(m.PlottedError!.Value)))).ToList();
            if (points.Count > 1)
                sb.Append(ci, $"<polyline class=\"series\" data-rank=\"{rank}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{string.Join(' ', points.Select(p => $"{F(p.X)},{F(p.Y)}"))}\"/>");
        }
        foreach (var m in plotted)
        {
            string color = RankColors[((m.Rank % RankColors.Length) + RankColors.Length) % RankColors.Length];
            double x = X(index[m.Module]);
            string tip = H(m.Oracle is { } oc
                ? $"{m.Label}: rel L2 against the float64 oracle {oc.EngineRelL2.ToString("0.00E+00", ci)} (reference's own {oc.ReferenceRelL2.ToString("0.00E+00", ci)}, bound {oc.L2Bound.ToString("0.00E+00", ci)}, margin {oc.Margin.ToString("G3", ci)}) ({m.Verdict})"
                : $"{m.Label}: rel L2 {(m.RelL2 is double v ? v.ToString("0.00E+00", ci) : "n/a")} ({m.Verdict})");
            if (m.PlottedError is double r && double.IsFinite(r))
            {
                string fill = m.Failed ? Red : color;
                sb.Append(ci, $"<circle class=\"point {(m.Failed ? "fail" : "pass")}\" cx=\"{F(x)}\" cy=\"{F(Y(Log(r)))}\" r=\"{(m.Failed ? 4.5 : 3)}\" fill=\"{fill}\" stroke=\"{(m.Failed ? "#000" : fill)}\" stroke-width=\"0.5\"><title>{tip}</title></circle>");
            }
            else if (m.Failed)
            {
                double y = Top + 6;
                sb.Append(ci, $"<g class=\"point fail\"><title>{tip}</title><path d=\"M{F(x - 4)} {F(y - 4)}L{F(x + 4)} {F(y + 4)}M{F(x - 4)} {F(y + 4)}L{F(x + 4)} {F(y - 4)}\" stroke=\"{Red}\" stroke-width=\"2\"/></g>");
            }
        }

        // Legend: one entry per rank.
        for (int i = 0; i < ranks.Count; i++)
        {
            string color = RankColors[((ranks[i] % RankColors.Length) + RankColors.Length) % RankColors.Length];
            double y = Top + 12 + 14 * i;
            sb.Append(ci, $"<g class=\"legend\"><line x1=\"{F(Left + plotW + 6)}\" x2=\"{F(Left + plotW + 20)}\" y1=\"{F(y + 20)}\" y2=\"{F(y + 20)}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{F(Left + plotW + 24)}\" y=\"{F(y + 24)}\" font-size=\"10\">rank {ranks[i]}</text></g>");
        }
        if (modules.Count == 0)
            sb.Append(ci, $"<text x=\"{F(Left + plotW / 2)}\" y=\"{F(Top + plotH / 2)}\" text-anchor=\"middle\" font-size=\"12\">no module was compared</text>");
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>log10 of an error, floored at 1e-12 (0 and anything smaller plot at the floor).</summary>
    public static double Log(double error) => Math.Log10(Math.Max(error, BaselineComparison.Floor));

    private static string H(string s) => WebUtility.HtmlEncode(s);
}
