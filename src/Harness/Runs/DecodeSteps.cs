using System.Globalization;
using Harness.Comparison;
using Harness.Engine.Tensors;

namespace Harness.Runs;

/// <summary>
/// Every decode step judged per module. Engine and reference are both fed the reference's greedy tokens (teacher forcing:
/// the reference's greedy run IS its forced run on its own tokens; the engine runs the one decode loop's forced option),
/// and each module's output at decode step s (1 .. new tokens - 1; step 0 is the prefill, judged as before) is captured
/// on both sides and by the float64 oracle fed the same tokens. A step's records are named <c>step&lt;s&gt;.&lt;module&gt;</c>
/// (the reference bundle's tensors, <c>oracle.step&lt;s&gt;.&lt;module&gt;</c> for the oracle's, and the engine's capture)
/// and judged by the same verdict as the prefill's modules (<see cref="OracleResult"/>), in a report of their own
/// (<see cref="Judge"/>) so the prefill's verdict and precision budget stay exactly what they were.
/// </summary>
public static class DecodeSteps
{
    private const string Prefix = "step";

    /// <summary>The record name of <paramref name="module"/> at decode step <paramref name="step"/> (step 0: the module itself).</summary>
    public static string Name(int step, string module) =>
        step == 0 ? module : string.Create(CultureInfo.InvariantCulture, $"{Prefix}{step}.{module}");

    /// <summary>(step, module) of a record name: "step3.model.norm" is (3, "model.norm"); any other name is step 0.</summary>
    public static (int Step, string Module) Parse(string name)
    {
        if (name.StartsWith(Prefix, StringComparison.Ordinal))
        {
            int dot = name.IndexOf('.', Prefix.Length);
            if (dot > Prefix.Length && int.TryParse(name.AsSpan(Prefix.Length, dot - Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int s) && s > 0)
                return (s, name[(dot + 1)..]);
        }
        return (0, name);
    }

    /// <summary>The judged records of a run of <paramref name="newTokens"/> tokens, in order: step 1's modules in forward
    /// order, then step 2's, ... (the first failing row is the first divergent (step, module, rank)).</summary>
    public static IReadOnlyList<string> Names(int newTokens, IReadOnlyList<string> modules) =>
        [.. Enumerable.Range(1, Math.Max(0, newTokens - 1)).SelectMany(s => modules.Select(m => Name(s, m)))];

    /// <summary>Whether the reference bundle holds decode-step captures (a recording made before they existed has none).</summary>
    public static bool Recorded(IReadOnlyDictionary<string, Tensor> reference) => reference.Keys.Any(k => Parse(k).Step > 0);

    /// <summary>
    /// The step-by-module grid of a decode-step report: a row per module (forward order), a column per step, each cell the
    /// smallest oracle margin over the module's rank records at that step (bound / observed: above 1 passes), "FAIL" where a
    /// record fails, "-" where none was judged; then the first divergent (step, module, rank).
    /// </summary>
    /// <param name="fedOn">Whose tokens both sides were fed ("the reference's tokens"; a dump's judge: "the dump's fed tokens").</param>
    public static string Grid(LayerReport steps, string fedOn = "the reference's tokens")
    {
        var ci = CultureInfo.InvariantCulture;
        var modules = steps.Rows.Select(r => r.StepModule).Distinct(StringComparer.Ordinal).ToList();
        var stepNumbers = steps.Rows.Select(r => r.Step).Where(s => s > 0).Distinct().Order().ToList();
        var cells = modules.Select(m => stepNumbers.Select(st =>
        {
            var rows = steps.Rows.Where(r => r.Step == st && r.StepModule == m && r.Verdict != LayerVerdict.Extra).ToList();
            if (rows.Count == 0) return "-";
            if (rows.Any(r => r.Failed)) return "FAIL";
            var margins = rows.Select(r => r.Result?.Oracle?.Margin).Where(x => x is not null).Select(x => x!.Value).ToList();
            return margins.Count == 0 ? "pass" : margins.Min().ToString("G3", ci);
        }).ToArray()).ToList();
        int w0 = modules.Append("module \\ step").Max(m => m.Length);
        var widths = stepNumbers.Select((st, j) => cells.Select(c => c[j].Length).Append(st.ToString(ci).Length).Max()).ToArray();
        var sb = new System.Text.StringBuilder();
        sb.Append(ci, $"decode steps (teacher-forced on {fedOn}): {(steps.Passed ? "PASS" : "FAIL")} " +
                      $"({steps.Rows.Count(r => !r.Failed)} of {steps.Rows.Count} step records without failure); cells: oracle margin\n");
        sb.Append("module \\ step".PadRight(w0));
        for (int j = 0; j < stepNumbers.Count; j++) sb.Append("  ").Append(stepNumbers[j].ToString(ci).PadLeft(widths[j]));
        sb.Append('\n');
        for (int i = 0; i < modules.Count; i++)
        {
            sb.Append(modules[i].PadRight(w0));
            for (int j = 0; j < stepNumbers.Count; j++) sb.Append("  ").Append(cells[i][j].PadLeft(widths[j]));
            sb.Append('\n');
        }
        if (steps.Budget is { } budget) sb.Append(budget).Append('\n');
        if (steps.FirstDivergence is { } first)
            sb.Append(ci, $"first divergent (step, module, rank): ({first.Step}, {first.StepModule}, {first.Rank})\n").Append(first.Describe());
        return sb.ToString();
    }

    /// <summary>
    /// The decode steps judged module by module: every step's module records against the reference's (and its float64
    /// oracle's, where recorded) under the prefill's verdict. A module the reference has at a step and the engine did not
    /// record there is Missing.
    /// </summary>
    public static LayerReport Judge(IReadOnlyDictionary<string, Tensor> reference, ActivationCapture engine, int newTokens,
        IReadOnlyList<string> stepModules, Func<string, TolerancePolicy>? policyFor = null, Func<DType, OracleBound>? oracleBound = null)
    {
        var names = Names(newTokens, stepModules);
        if (names.Count > 0 && !Recorded(reference))                // nothing silently skipped: an old recording is named
            return new LayerReport([new LayerRow(names[0], 0, null, $"{names[0]} (decode steps)", LayerVerdict.Missing, null, null, null, null, null,
                "the reference has no decode-step captures (a recording made before every decode step was judged per module: " +
                "`harness fixtures record`)")]);
        var selected = LayerComparison.Select(reference, names);
        var stepBound = oracleBound ?? OracleBound.ForDecodeStep;
        Func<string, TolerancePolicy>? policy = policyFor is null ? null : name => policyFor(Parse(name).Module);
        var single = LayerComparison.Run(selected, engine, names, policy, rec => stepBound(rec.Value.DType));
        // The noise scale of a (module, rank): the reference's own error over all its steps (root mean square), not one
        // step's sample of it (OracleBound.ReferenceL2Floor). The engine's error stays per step: a bug at one step is named there.
        var scale = single.Rows
            .Where(r => r.Result?.Oracle is { } o && double.IsFinite(o.ReferenceRelativeL2) && double.IsFinite(o.ReferenceMaxAbs))
            .GroupBy(r => (r.StepModule, r.Rank))
            .ToDictionary(g => g.Key, g => (
                L2: Rms(g.Select(r => r.Result!.Oracle!.ReferenceRelativeL2)),
                MaxAbs: Rms(g.Select(r => r.Result!.Oracle!.ReferenceMaxAbs))));
        if (scale.Count == 0) return single;
        return LayerComparison.Run(selected, engine, names, policy, rec =>
        {
            var (l2, maxAbs) = scale.GetValueOrDefault((Parse(rec.Module).Module, rec.Rank));
            return stepBound(rec.Value.DType) with { ReferenceL2Floor = l2, ReferenceMaxAbsFloor = maxAbs };
        });

        static double Rms(IEnumerable<double> xs) => Math.Sqrt(xs.Average(x => x * x));
    }
}
