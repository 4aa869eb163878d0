using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Harness.Reports;

/// <summary>
/// The distribution the oracle bounds are chosen from: per dtype and module kind, the engine/reference error ratios
/// relL2(engine, float64) / relL2(reference, float64) of the scenarios that expect to pass (no fault), over one or
/// several report.json files (the catalog, live or offline, and more seeds): count, median, 99th percentile, maximum,
/// the same for the elementwise ratio max|e - o| / max|r - o|, the scale bias in standard errors over the reference's,
/// the per-scenario geometric mean (the precision budget's statistic), and the largest rows by name.
/// Rows where the reference's own error is exactly 0 are counted apart (the floor judges them).
/// </summary>
public static partial class RatioDistribution
{
    /// <summary>The module kind of an HF module path: attention, mlp, norm, layer, embed, logits, tower or other.</summary>
    public static string KindOf(string module)
    {
        var last = module[(module.LastIndexOf('.') + 1)..];
        if (module is "lm_head" or "logits" || last is "lm_head") return "logits";
        if (last.Contains("norm", StringComparison.Ordinal)) return "norm";
        if (last is "self_attn" or "attn" or "attention" or "cross_attn") return "attention";
        if (last is "mlp" or "experts" or "router" or "feed_forward" or "laurel" or "altup") return "mlp";
        if (LayerIndex().IsMatch(module) && int.TryParse(last, out _)) return "layer";
        if (last.Contains("embed", StringComparison.Ordinal) || module.Contains("embed_", StringComparison.Ordinal)) return "embed";
        if (module.Contains("tower", StringComparison.Ordinal) || module.Contains("visual", StringComparison.Ordinal)) return "tower";
        return "other";
    }

    [GeneratedRegex(@"layers\.\d+$")]
    private static partial Regex LayerIndex();

    public sealed record Row(string Scenario, string Dtype, string Kind, string Label, double Ratio, double AbsRatio, double BiasSigmas);

    /// <summary>The rows of the oracle-judged modules of the passing-expected scenarios of the reports.</summary>
    public static List<Row> Rows(IEnumerable<AccuracyReport> reports)
    {
        var rows = new List<Row>();
        foreach (var report in reports)
            foreach (var s in report.Scenarios.Where(s => s.Fault is null))
                foreach (var m in s.Modules)
                    if (m.Oracle is { } o && double.IsFinite(o.EngineRelL2))
                    {
                        double abs = o.ReferenceMaxAbs > 0 ? o.EngineMaxAbs / o.ReferenceMaxAbs : o.EngineMaxAbs == 0 ? 1 : double.PositiveInfinity;
                        // how far the engine's scale bias goes past the reference's, in units of what the bound allows
                        double bias = double.IsFinite(o.BiasBound) && o.BiasBound > 0 ? Math.Abs(o.EngineScaleBias) / o.BiasBound : double.NaN;
                        rows.Add(new Row(s.Id, s.Dtype, KindOf(m.Module), m.Label, o.ErrorRatio, abs, bias));
                    }
        return rows;
    }

    /// <summary>The printed distribution (what `harness ratios` writes).</summary>
    public static string Format(IReadOnlyList<AccuracyReport> reports, int worst = 10)
    {
        var ci = CultureInfo.InvariantCulture;
        var rows = Rows(reports);
        var sb = new StringBuilder();
        sb.Append(ci, $"engine/reference error ratios against the float64 oracle: {rows.Count} module rows of {reports.Sum(r => r.Scenarios.Count(s => s.Fault is null))} scenarios without a fault\n");
        sb.Append("relative L2 ratio (the norm-wise C), elementwise max ratio (Ca), |scale bias| / its bound; rows where the reference is exact counted apart\n\n");
        string[] header = ["dtype", "kind", "rows", "exact", "L2 median", "L2 p99", "L2 max", "abs median", "abs p99", "abs max", "bias/bound max"];
        var table = new List<string[]> { header };
        foreach (var g in rows.GroupBy(r => (r.Dtype, r.Kind)).OrderBy(g => g.Key.Dtype, StringComparer.Ordinal).ThenBy(g => g.Key.Kind, StringComparer.Ordinal)
                     .Concat(rows.GroupBy(r => (r.Dtype, Kind: "all")).OrderBy(g => g.Key.Dtype, StringComparer.Ordinal)))
        {
            var l2 = g.Select(r => r.Ratio).Where(double.IsFinite).ToList();
            var abs = g.Select(r => r.AbsRatio).Where(double.IsFinite).ToList();
            var bias = g.Select(r => r.BiasSigmas).Where(double.IsFinite).ToList();
            table.Add([g.Key.Dtype, g.Key.Kind, g.Count().ToString(ci), (g.Count() - l2.Count).ToString(ci),
                F(Quantile(l2, 0.5)), F(Quantile(l2, 0.99)), F(Quantile(l2, 1)),
                F(Quantile(abs, 0.5)), F(Quantile(abs, 0.99)), F(Quantile(abs, 1)), F(Quantile(bias, 1))]);
        }
        var widths = header.Select((_, i) => table.Max(r => r[i].Length)).ToArray();
        foreach (var r in table) sb.Append(string.Join("  ", r.Select((c, i) => c.PadRight(widths[i])))).Append('\n');

        sb.Append("\nper-scenario geometric mean of the L2 ratios (the precision budget), by dtype: ");
        var geo = reports.SelectMany(r => r.Scenarios.Where(s => s.Fault is null)).Select(s => (s.Dtype, s.Id, G: GeometricMean(s)))
            .Where(x => x.G is not null).ToList();
        sb.Append(string.Join("; ", geo.GroupBy(x => x.Dtype).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g =>
        {
            var top = g.MaxBy(x => x.G!.Value);
            return string.Create(ci, $"{g.Key}: median {F(Quantile(g.Select(x => x.G!.Value).ToList(), 0.5))}, max {F(top.G!.Value)} ({top.Id})");
        }))).Append('\n');

        sb.Append(ci, $"\nthe {worst} largest L2 ratios per dtype:\n");
        foreach (var g in rows.GroupBy(r => r.Dtype).OrderBy(g => g.Key, StringComparer.Ordinal))
            foreach (var r in g.Where(r => double.IsFinite(r.Ratio)).OrderByDescending(r => r.Ratio).Take(worst))
                sb.Append(ci, $"  {r.Dtype}  {F(r.Ratio),7}  {r.Scenario}  {r.Label}\n");
        return sb.ToString();

        static string F(double x) => double.IsNaN(x) ? "-" : x.ToString("G3", CultureInfo.InvariantCulture);
    }

    /// <summary>The scenario's geometric mean of L2 ratios over rows with a non-zero reference error (null: none).</summary>
    public static double? GeometricMean(ScenarioRecord s)
    {
        var logs = s.Modules.Select(m => m.Oracle).Where(o => o is { ReferenceRelL2: > 0 } && double.IsFinite(o.EngineRelL2))
            .Select(o => Math.Log(Math.Max(o!.ErrorRatio, 1e-300))).ToList();
        return logs.Count == 0 ? null : Math.Exp(logs.Average());
    }

    /// <summary>The q-quantile (nearest rank; q = 1 the maximum); NaN for no values.</summary>
    public static double Quantile(List<double> values, double q)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToList();
        int rank = (int)Math.Ceiling(q * sorted.Count);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Count - 1)];
    }
}
