using Harness.Runs;

namespace Harness.Reports;

/// <summary>A module's tolerance policy as the report shows it: its name and allclose numbers.</summary>
public sealed record ToleranceRecord(string Name, double Rtol, double Atol);

/// <summary>
/// A module judged against the float64 oracle: the engine's and the reference's own relative L2 error against it, the
/// bound the engine had to meet, the max abs errors and bound, the outliers over the elementwise bound, and the margin
/// (bound / observed; above 1 passes).
/// </summary>
public sealed record OracleRecord(double EngineRelL2, double ReferenceRelL2, double L2Bound, double EngineMaxAbs, double ReferenceMaxAbs,
    double AbsBound, long Outliers, long OutlierBudget, double Margin, bool Passed)
{
    /// <summary>The engine's and the reference's scale bias against the oracle and the engine's bound (NaN: not recorded).</summary>
    public double EngineScaleBias { get; init; } = double.NaN;
    public double ReferenceScaleBias { get; init; } = double.NaN;
    public double BiasBound { get; init; } = double.NaN;

    /// <summary>relL2(engine) / relL2(reference) against the oracle: the statistic the bounds were chosen from.</summary>
    public double ErrorRatio => ReferenceRelL2 > 0 ? EngineRelL2 / ReferenceRelL2 : EngineRelL2 == 0 ? 1 : double.PositiveInfinity;
}

/// <summary>
/// One row of a scenario's layer-by-layer comparison, flattened for the report. The error numbers are null where
/// values were not compared (missing, extra, invalid shard, shape mismatch); they may be NaN or infinite where the
/// engine produced such values (report.json writes those as null). Verdict is one of <see cref="Verdicts"/>.
/// </summary>
public sealed record ModuleRecord(
    string Module,
    int Rank,
    string Label,
    int[]? EngineShape,
    int[]? ExpectedShape,
    double? MaxAbs,
    double? MaxRel,
    double? RelL2,
    long? Mismatches,
    long? Total,
    ToleranceRecord? Tolerance,
    string Verdict,
    string Note)
{
    /// <summary>The verdict strings, one per <see cref="LayerVerdict"/>.</summary>
    public static class Verdicts
    {
        public const string Pass = "pass";
        public const string Fail = "fail";
        public const string ShapeMismatch = "shape-mismatch";
        public const string InvalidShard = "invalid-shard";
        public const string Missing = "missing";
        public const string Extra = "extra";
    }

    /// <summary>The oracle verdict's numbers (null: judged by the fixed <see cref="Tolerance"/> policy, the fallback).</summary>
    public OracleRecord? Oracle { get; init; }

    /// <summary>The decode step of the record: 0 the prefill, 1.. a decode step judged per module (<see cref="Runs.DecodeSteps"/>).</summary>
    public int Step { get; init; }

    /// <summary>What the verdict used: "oracle", or the fixed policy's name.</summary>
    public string VerdictBasis => Oracle is not null ? "oracle" : Tolerance?.Name ?? "-";

    /// <summary>The error the report plots: against the oracle where there is one, else against the reference.</summary>
    public double? PlottedError => Oracle?.EngineRelL2 ?? RelL2;

    /// <summary>Whether this row fails its scenario (everything but pass and extra).</summary>
    public bool Failed => Verdict is not (Verdicts.Pass or Verdicts.Extra);

    /// <summary>The report row of a layer comparison row.</summary>
    public static ModuleRecord From(LayerRow row)
    {
        ArgumentNullException.ThrowIfNull(row);
        var r = row.Result is { ShapeMatches: true } ? row.Result : null;
        return new ModuleRecord(row.StepModule, row.Rank, row.Label, row.EngineShape, row.ExpectedShape,
            r?.MaxAbsError, r?.MaxRelError, r?.RelativeL2, r?.Mismatches, r?.Total,
            row.Policy is null ? null : new ToleranceRecord(row.Policy.Name, row.Policy.Rtol, row.Policy.Atol),
            VerdictOf(row.Verdict), row.Note)
        {
            Oracle = r?.Oracle is { } o
                ? new OracleRecord(o.EngineRelativeL2, o.ReferenceRelativeL2, o.L2Bound, o.EngineMaxAbs, o.ReferenceMaxAbs, o.AbsBound,
                    o.Outliers, o.OutlierBudget, o.Margin, o.Passed)
                { EngineScaleBias = o.EngineScaleBias, ReferenceScaleBias = o.ReferenceScaleBias, BiasBound = o.BiasBound }
                : null,
            Step = row.Step,
        };
    }

    /// <summary>The report's string for a layer verdict.</summary>
    public static string VerdictOf(LayerVerdict verdict) => verdict switch
    {
        LayerVerdict.Pass => Verdicts.Pass,
        LayerVerdict.Fail => Verdicts.Fail,
        LayerVerdict.ShapeMismatch => Verdicts.ShapeMismatch,
        LayerVerdict.InvalidShard => Verdicts.InvalidShard,
        LayerVerdict.Missing => Verdicts.Missing,
        _ => Verdicts.Extra,
    };
}
