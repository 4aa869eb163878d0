using System.Globalization;

namespace Harness.Reports;

/// <summary>
/// How one scenario present in both reports moved. Growth is current / baseline max relative L2 error, both floored at
/// <see cref="BaselineComparison.Floor"/> (null when either side compared no module). Regression is set when the error
/// grew by more than the factor (not for mutation checks, whose error is meant to be large) or the verdict went from pass
/// to fail; Reason says which, in words.
/// </summary>
public sealed record ScenarioDelta(
    string Id,
    string BaselineVerdict,
    string CurrentVerdict,
    double? BaselineMaxRelL2,
    double? CurrentMaxRelL2,
    double? Growth,
    bool Regression,
    string Reason);

/// <summary>
/// A report compared with a baseline report: per common scenario id a <see cref="ScenarioDelta"/>, plus the ids only
/// the current report has (Added) and only the baseline has (Removed).
/// </summary>
public sealed record BaselineComparison(
    double GrowthFactor,
    DateTime? BaselineGeneratedAt,
    IReadOnlyList<ScenarioDelta> Scenarios,
    IReadOnlyList<string> Added,
    IReadOnlyList<string> Removed)
{
    /// <summary>Errors below this count as this (the plot's floor too): 0 to 1e-13 is not a regression.</summary>
    public const double Floor = 1e-12;

    public IEnumerable<ScenarioDelta> Regressions => Scenarios.Where(s => s.Regression);

    public int RegressionCount => Scenarios.Count(s => s.Regression);

    /// <summary>Compares current with baseline; a scenario regresses when its max rel L2 grew by more than factor or it went pass to fail.</summary>
    public static BaselineComparison Compare(AccuracyReport current, AccuracyReport baseline, double factor = 2.0)
    {
        ArgumentNullException.ThrowIfNull(current);
        ArgumentNullException.ThrowIfNull(baseline);
        if (!(factor >= 1)) throw new ArgumentOutOfRangeException(nameof(factor), factor, "the growth factor must be at least 1");
        var ci = CultureInfo.InvariantCulture;
        var before = new Dictionary<string, ScenarioRecord>(StringComparer.Ordinal);
        foreach (var s in baseline.Scenarios) before.TryAdd(s.Id, s);
        var nowIds = new HashSet<string>(current.Scenarios.Select(s => s.Id), StringComparer.Ordinal);

        var deltas = new List<ScenarioDelta>();
        var added = new List<string>();
        foreach (var now in current.Scenarios)
        {
            if (!before.TryGetValue(now.Id, out var then))
            {
                added.Add(now.Id);
                continue;
            }
            double? a = then.MaxRelL2, b = now.MaxRelL2;
            double? growth = a is double x && b is double y ? Math.Max(y, Floor) / Math.Max(x, Floor) : null;
            var reasons = new List<string>();
            if (then.Passed && !now.Passed) reasons.Add("verdict went from pass to fail");
            if (growth > factor && !now.ExpectFailure) // a mutation check's error is meant to be large: only its verdict counts
                reasons.Add(string.Create(ci, $"max rel L2 grew {growth:G3}x ({a:0.00E+00} -> {b:0.00E+00}), more than {factor:G3}x"));
            bool regression = reasons.Count > 0;
            if (!regression)
            {
                if (!then.Passed && now.Passed) reasons.Add("fixed: verdict went from fail to pass");
                reasons.Add(growth is double g ? string.Create(ci, $"max rel L2 {a:0.00E+00} -> {b:0.00E+00} ({g:G3}x)") : "no comparable rel L2 on one side");
            }
            deltas.Add(new ScenarioDelta(now.Id, then.Verdict, now.Verdict, a, b, growth, regression, string.Join("; ", reasons)));
        }
        var removed = baseline.Scenarios.Select(s => s.Id).Where(id => !nowIds.Contains(id)).Distinct(StringComparer.Ordinal).ToList();
        return new BaselineComparison(factor, baseline.GeneratedAt, deltas, added, removed);
    }
}
