using System.Diagnostics;
using Harness.Comparison;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// Runs catalog scenarios in a context (live or recorded). In a live context that also has a recording for the
/// scenario's reference key, the drift between the recorded and the live reference is measured and reported.
/// </summary>
public static class ScenarioRunner
{
    public sealed record Outcome(ScenarioResult Result, DriftReport? Drift);

    /// <summary>
    /// Gets the reference (live or recorded; a recording is checked against the scenario's inputs), runs and compares
    /// the engine, then measures drift (live). <paramref name="phase"/> hears "reference", "engine", "compare" as each starts.
    /// </summary>
    public static Outcome Run(Scenario scenario, ScenarioContext context, Action<string>? phase = null)
    {
        var sw = Stopwatch.StartNew();
        scenario.CheckInputs(context);
        phase?.Invoke("reference");
        ReferenceBundle reference;
        try
        {
            reference = context.Reference(scenario);
        }
        catch (Exception e) when (e is FileNotFoundException or Reference.ReferenceException)
        {
            throw new InvalidOperationException($"{scenario.Id}: no reference: {e.Message}", e);
        }
        if (!context.IsLive) CheckRecordedInputs(scenario, context, reference);
        phase?.Invoke("engine");
        ScenarioResult result;
        try
        {
            result = scenario.RunEngine(context, reference);               // engine failures are caught inside, as results
        }
        catch (Exception e) when (!context.IsLive && e is KeyNotFoundException or ArgumentException or IndexOutOfRangeException)
        {
            // Offline, what escapes the scenario's own preparation is the recording not holding what the scenario reads
            // (a tensor missing, renamed or of another shape): the recording's problem, named with its path.
            throw new Engine.IO.InputException(Fixtures.BundlePath(context.FixturesDirectory, scenario.ReferenceKey),
                $"the recording does not hold what {scenario.Id} reads: {e.Message.Split('\n')[0]}", e);
        }
        phase?.Invoke("compare");
        var drift = context.IsLive ? Drift(scenario, context, reference) : null;
        return new Outcome(result with { Elapsed = sw.Elapsed }, drift);
    }

    /// <summary>
    /// A recording is only valid for the inputs it was computed from: when the scenario now generates different inputs
    /// (a changed seed, shape or generator), say so instead of reporting a numerical divergence.
    /// </summary>
    public static void CheckRecordedInputs(Scenario scenario, ScenarioContext context, ReferenceBundle reference)
    {
        if (reference.Inputs.Count == 0) return;
        var path = Fixtures.BundlePath(context.FixturesDirectory, scenario.ReferenceKey);
        foreach (var (name, now) in scenario.Inputs(context))
        {
            if (!reference.Inputs.TryGetValue(name, out var recorded))
                throw new Engine.IO.InputException(path, $"the recording has no input '{name}' for {scenario.Id}: re-record with `harness fixtures record {scenario.Id}`");
            if (!recorded.BitwiseEquals(now))
                throw new Engine.IO.InputException(path,
                    $"input '{name}' of {scenario.Id} {Engine.Tensors.Shape.Format(now.Shape)} differs from the recorded one {Engine.Tensors.Shape.Format(recorded.Shape)}: " +
                    $"the fixture is stale; re-record with `harness fixtures record {scenario.Id}`");
        }
    }

    /// <summary>The recorded reference against the live one, module by module (null when nothing is recorded).</summary>
    public static DriftReport? Drift(Scenario scenario, ScenarioContext context, ReferenceBundle live)
    {
        var path = Fixtures.BundlePath(context.FixturesDirectory, scenario.ReferenceKey);
        if (!File.Exists(path)) return null;
        var recorded = ReferenceBundle.Load(path);
        var rows = new List<ComparisonResult>();
        foreach (var (name, tensor) in live.Tensors.Where(t => !t.Key.StartsWith(LayerComparison.OraclePrefix, StringComparison.Ordinal)))
            if (recorded.Tensors.TryGetValue(name, out var old))
                rows.Add(TensorComparer.Compare(name, tensor, old, Tolerances.For(tensor.DType)));
        bool tokensEqual = live.Tokens is null || recorded.Tokens is null || live.Tokens.Tokens.SequenceEqual(recorded.Tokens.Tokens);
        recorded.Versions.TryGetValue("torch", out var torch);
        recorded.Versions.TryGetValue("transformers", out var transformers);
        return new DriftReport(scenario.ReferenceKey, rows, tokensEqual, $"torch {torch ?? "?"}, transformers {transformers ?? "?"}");
    }
}

/// <summary>How far the live reference moved from the recorded one (a new torch or transformers can move it).</summary>
public sealed record DriftReport(string Key, IReadOnlyList<ComparisonResult> Modules, bool TokensEqual, string RecordedWith)
{
    public double MaxRelativeL2 => Modules.Count == 0 ? 0 : Modules.Max(m => double.IsNaN(m.RelativeL2) ? double.PositiveInfinity : m.RelativeL2);
    public bool Drifted => !TokensEqual || Modules.Any(m => !m.Passed);

    public override string ToString() =>
        $"drift of {Key} against the recording ({RecordedWith}): max relative L2 {MaxRelativeL2:E2}, tokens {(TokensEqual ? "equal" : "DIFFER")}" +
        (Drifted ? "; DRIFTED: " + string.Join(", ", Modules.Where(m => !m.Passed).Select(m => m.What).Take(5)) : "");
}
