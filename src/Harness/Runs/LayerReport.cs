using Harness.Engine.Capture;
using System.Globalization;
using System.Text;
using Harness.Comparison;
using Harness.Engine.Tensors;

namespace Harness.Runs;

/// <summary>What one row of a layer-by-layer comparison found.</summary>
public enum LayerVerdict
{
    /// <summary>Shapes match and every compared element is within tolerance.</summary>
    Pass,
    /// <summary>Shapes match but some element is outside tolerance.</summary>
    Fail,
    /// <summary>The engine tensor's shape is not the shape its shard spec says it should have; values not compared.</summary>
    ShapeMismatch,
    /// <summary>The shard spec cannot apply to the reference (e.g. its dim is outside the reference's rank).</summary>
    InvalidShard,
    /// <summary>The reference has the module, the engine recorded nothing for it.</summary>
    Missing,
    /// <summary>The engine recorded a module the reference does not have: information, not a failure.</summary>
    Extra,
}

/// <summary>
/// One row: a module as one rank recorded it (or a missing/extra module). Label names the module, rank and slice, e.g.
/// "model.layers.1.self_attn (rank 1, tokens 4..6 of 7, 1 padding row)". Result is null for missing and extra rows and
/// for an invalid shard; for a shape mismatch it holds both shapes (engine, expected) and no errors. ExpectedShape is the
/// shape the engine tensor should have: the reference slice's, padding rows included for <see cref="ShardSpec.Rows"/>.
/// </summary>
public sealed record LayerRow(
    string Module,
    int Rank,
    ShardSpec? Shard,
    string Label,
    LayerVerdict Verdict,
    int[]? EngineShape,
    int[]? ExpectedShape,
    int[]? ReferenceShape,
    TolerancePolicy? Policy,
    ComparisonResult? Result,
    string Note)
{
    public bool Failed => Verdict is LayerVerdict.Fail or LayerVerdict.ShapeMismatch or LayerVerdict.InvalidShard or LayerVerdict.Missing;

    /// <summary>The decode step the row belongs to (0: the prefill; <see cref="DecodeSteps"/>).</summary>
    public int Step => DecodeSteps.Parse(Module).Step;

    /// <summary>The module path without its decode step.</summary>
    public string StepModule => DecodeSteps.Parse(Module).Module;

    /// <summary>The row's failure (or outcome) in words, with both shapes and the shard spec for shape mismatches.</summary>
    public string Describe()
    {
        var ci = CultureInfo.InvariantCulture;
        switch (Verdict)
        {
            case LayerVerdict.ShapeMismatch:
                return string.Create(ci,
                    $"{Label}: SHAPE MISMATCH\n  engine {Shape.Format(EngineShape)} vs expected {Shape.Format(ExpectedShape)} " +
                    $"(reference {Shape.Format(ReferenceShape)}, shard: {Shard})\n");
            case LayerVerdict.Missing:
            case LayerVerdict.Extra:
            case LayerVerdict.InvalidShard:
                return $"{Label}: {Verdict.ToString().ToUpperInvariant()}\n  {Note}\n";
            default:
                var text = Result?.ToString() ?? $"{Label}: {Verdict}\n";
                return Shard is ShardSpec.Full or null ? text
                    : text + string.Create(ci, $"  shard: {Shard} of reference {Shape.Format(ReferenceShape)}\n");
        }
    }
}

/// <summary>
/// The layer-by-layer comparison of one run: one row per (module, rank record) in module order, then extras.
/// <see cref="FirstDivergence"/> is the first failing row in that order: where to start looking.
/// </summary>
public sealed record LayerReport(IReadOnlyList<LayerRow> Rows)
{
    /// <summary>The scenario-level precision budget over the oracle-judged rows (null: no row was judged by the oracle).</summary>
    public PrecisionBudget? Budget { get; } = PrecisionBudget.Of(Rows);

    public bool Passed => !Rows.Any(r => r.Failed) && Budget is not { Passed: false };

    /// <summary>
    /// The first failing row in module order; when every row passes but the precision budget does not, the first row
    /// whose own ratio exceeds the budget's limit (where the lost precision starts).
    /// </summary>
    public LayerRow? FirstDivergence => Rows.FirstOrDefault(r => r.Failed) ?? (Budget is { Passed: false } b ? b.FirstOver : null);

    public IEnumerable<LayerRow> Failures => Rows.Where(r => r.Failed);

    /// <summary>
    /// A table (module, shape, max abs, max rel, rel L2 against the reference; the engine's and the reference's own relative L2
    /// against the float64 oracle and the margin, where there is one; tolerance, verdict), then the first divergence block.
    /// </summary>
    public override string ToString()
    {
        var ci = CultureInfo.InvariantCulture;
        string[] header = ["module", "shape", "max abs", "max rel", "rel L2", "engine/f64", "ref/f64", "margin", "tolerance", "verdict"];
        var cells = Rows.Select(r => new[]
        {
            r.Label,
            r.Verdict == LayerVerdict.ShapeMismatch
                ? $"{Shape.Format(r.EngineShape)} vs {Shape.Format(r.ExpectedShape)}"
                : r.EngineShape is null ? "-" : Shape.Format(r.EngineShape),
            Number(r.Result, x => x.MaxAbsError),
            Number(r.Result, x => x.MaxRelError),
            Number(r.Result, x => x.RelativeL2),
            Number(r.Result?.Oracle is null ? null : r.Result, x => x.Oracle!.EngineRelativeL2),
            Number(r.Result?.Oracle is null ? null : r.Result, x => x.Oracle!.ReferenceRelativeL2),
            r.Result?.Oracle is { } o ? o.Margin.ToString("G3", CultureInfo.InvariantCulture) : "-",
            r.Result?.Oracle is not null ? "oracle" : r.Policy?.ToString() ?? "-",
            r.Verdict switch
            {
                LayerVerdict.Pass => "PASS",
                LayerVerdict.Fail => "FAIL",
                LayerVerdict.ShapeMismatch => "FAIL (shape)",
                LayerVerdict.InvalidShard => "FAIL (shard)",
                LayerVerdict.Missing => "FAIL (missing)",
                _ => "extra",
            },
        }).ToList();
        var widths = header.Select((h, i) => cells.Select(c => c[i].Length).Append(h.Length).Max()).ToArray();
        var sb = new StringBuilder();
        int failed = Rows.Count(r => r.Failed);
        sb.Append(ci, $"layer comparison: {(Passed ? "PASS" : "FAIL")} ({Rows.Count - failed} of {Rows.Count} rows without failure)\n");
        AppendRow(sb, header, widths);
        AppendRow(sb, widths.Select(w => new string('-', w)).ToArray(), widths);
        foreach (var c in cells) AppendRow(sb, c, widths);
        if (Budget is { } budget) sb.Append(budget).Append('\n');
        if (FirstDivergence is { } first)
            sb.Append("first divergence: ").Append(first.Label).Append('\n').Append(first.Describe());
        return sb.ToString();

        static string Number(ComparisonResult? r, Func<ComparisonResult, double> pick) =>
            r is null || !r.ShapeMatches ? "-" : pick(r).ToString("E2", CultureInfo.InvariantCulture);

        static void AppendRow(StringBuilder sb, string[] c, int[] w)
        {
            for (int i = 0; i < c.Length; i++)
            {
                if (i > 0) sb.Append("  ");
                sb.Append(i == c.Length - 1 ? c[i] : c[i].PadRight(w[i]));
            }
            sb.Append('\n');
        }
    }
}

/// <summary>
/// The scenario-level precision budget: the geometric mean of relL2(engine)/relL2(reference) against the float64 oracle over
/// every oracle-judged row where the reference's own error is not 0, at most the bound's <see cref="OracleBound.GeometricMeanRatio"/>
/// (the strictest bound among the rows: the scenario's dtype). Each module may be up to C times noisier than the reference;
/// a run where the engine is noisier nearly everywhere (an intermediate rounded to bf16 where HF keeps float32 loses a
/// little precision at every layer) is not a correct engine. <see cref="FirstOver"/> is the first row, in module order,
/// whose own ratio exceeds the limit.
/// </summary>
public sealed record PrecisionBudget(double GeometricMean, double Limit, int Modules, LayerRow? FirstOver)
{
    public bool Passed => !(GeometricMean > Limit);

    public static PrecisionBudget? Of(IReadOnlyList<LayerRow> rows)
    {
        double logSum = 0, limit = double.PositiveInfinity;
        int n = 0;
        foreach (var r in rows)
            if (r.Result?.Oracle is { ReferenceRelativeL2: > 0 } o && double.IsFinite(o.EngineRelativeL2))
            {
                logSum += Math.Log(Math.Max(o.ErrorRatio, 1e-300));
                limit = Math.Min(limit, o.Bound.GeometricMeanRatio);
                n++;
            }
        if (n == 0) return null;
        double mean = Math.Exp(logSum / n);
        var first = rows.FirstOrDefault(r => r.Result?.Oracle is { ReferenceRelativeL2: > 0 } o && o.ErrorRatio > limit);
        return new PrecisionBudget(mean, limit, n, first);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture,
            $"precision budget: geometric mean of engine/reference error ratios {GeometricMean:G3} over {Modules} modules (limit {Limit:G3}): ") +
        (Passed ? "within" : "OVER") + (Passed || FirstOver is null ? "" : $"; first module over the limit: {FirstOver.Label}");
}
