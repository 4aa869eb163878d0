using Harness.Engine.Capture;
using System.Globalization;
using Harness.Comparison;
using Harness.Engine.Tensors;

namespace Harness.Runs;

/// <summary>
/// Compares an engine run's captured module outputs with the reference's, module by module in forward order.
/// For each record the reference slice its <see cref="ShardSpec"/> names is cut out; shapes are compared first (a
/// mismatch is its own verdict, naming both shapes and the spec, and values are not compared), then values under the
/// module's tolerance policy. Rows come in <c>moduleOrder</c>; reference modules not in it follow in ordinal name order
/// (so nothing the reference has is silently skipped), and within a module records go by rank, then arrival. A module
/// the reference has and the engine did not record is Missing (a failure); an engine record with no reference tensor
/// is Extra (information only). A reference tensor named "oracle.&lt;module&gt;" is the float64 oracle's capture of that
/// module: the module is then judged by <see cref="OracleResult"/> (engine error against the reference's own error),
/// else by its fixed policy, and the row says which.
/// </summary>
public static class LayerComparison
{
    /// <param name="reference">The reference's full tensors by module name (HF names).</param>
    /// <param name="engine">What the engine recorded.</param>
    /// <param name="moduleOrder">Forward order of the modules; fixes row order and so which failure is the first.</param>
    /// <param name="policyFor">Tolerance per module; null: <see cref="DefaultPolicy"/> of the engine's and the reference's dtypes.</param>
    /// <summary>The prefix of the float64 oracle's captures among the reference tensors.</summary>
    public const string OraclePrefix = "oracle.";

    /// <summary>The reference tensors of the given modules, each with its float64 oracle capture where there is one.</summary>
    public static IReadOnlyDictionary<string, Tensor> Select(IReadOnlyDictionary<string, Tensor> reference, IEnumerable<string> modules)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var m in modules)
        {
            if (reference.TryGetValue(m, out var t)) result[m] = t;
            if (reference.TryGetValue(OraclePrefix + m, out var o)) result[OraclePrefix + m] = o;
        }
        return result;
    }

    public static LayerReport Run(
        IReadOnlyDictionary<string, Tensor> reference,
        ActivationCapture engine,
        IReadOnlyList<string> moduleOrder,
        Func<string, TolerancePolicy>? policyFor = null,
        Func<CapturedActivation, OracleBound>? oracleBound = null)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(moduleOrder);

        var records = engine.Records.GroupBy(r => r.Module, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.OrderBy(r => r.Rank).ThenBy(r => r.Sequence).ToList(), StringComparer.Ordinal);
        var order = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var m in moduleOrder)
            if (seen.Add(m)) order.Add(m);
        foreach (var m in reference.Keys.Where(k => !seen.Contains(k) && !k.StartsWith(OraclePrefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
            if (seen.Add(m)) order.Add(m);
        foreach (var m in records.Keys.Where(k => !seen.Contains(k)).Order(StringComparer.Ordinal))
            if (seen.Add(m)) order.Add(m);

        var rows = new List<LayerRow>();
        foreach (var module in order)
        {
            bool hasRef = reference.TryGetValue(module, out var expected);
            records.TryGetValue(module, out var recs);
            if (recs is null || recs.Count == 0)
            {
                if (hasRef)
                    rows.Add(new LayerRow(module, 0, null, module, LayerVerdict.Missing, null, null, expected!.ShapeArray, null, null,
                        $"the reference has {module} {Shape.Format(expected.Shape)}, the engine recorded nothing for it"));
                continue;
            }
            int perRank = 0;
            for (int i = 0; i < recs.Count; i++)
            {
                var rec = recs[i];
                perRank = i > 0 && recs[i - 1].Rank == rec.Rank ? perRank + 1 : 0;
                bool repeated = perRank > 0 || (i + 1 < recs.Count && recs[i + 1].Rank == rec.Rank);
                rows.Add(hasRef
                    ? CompareOne(rec, expected!, reference.GetValueOrDefault(OraclePrefix + module),
                        policyFor?.Invoke(module) ?? DefaultPolicy(rec.Value.DType, expected!.DType), repeated ? perRank + 1 : 0,
                        oracleBound?.Invoke(rec))
                    : new LayerRow(module, rec.Rank, rec.Shard, Label(rec, "", 0), LayerVerdict.Extra, rec.Value.ShapeArray, null, null, null, null,
                        $"the engine recorded {module} {Shape.Format(rec.Value.Shape)} on rank {rec.Rank}; the reference has no such module"));
            }
        }
        return new LayerReport(rows);
    }

    private static LayerRow CompareOne(CapturedActivation rec, Tensor reference, Tensor? oracle, TolerancePolicy policy, int call, OracleBound? bound)
    {
        var refShape = reference.ShapeArray;
        var engineShape = rec.Value.ShapeArray;
        if (!rec.Shard.TryResolve(refShape, out var window, out var error))
            return new LayerRow(rec.Module, rec.Rank, rec.Shard, Label(rec, "", call), LayerVerdict.InvalidShard, engineShape, null, refShape,
                policy, null, $"shard {rec.Shard} does not apply: {error}");

        string label = Label(rec, window.Describe, call);
        if (!engineShape.AsSpan().SequenceEqual(window.ExpectedEngineShape))
        {
            var mismatch = new ComparisonResult(label, engineShape, window.ExpectedEngineShape, rec.Value.DType, reference.DType, policy,
                double.NaN, double.NaN, [], double.NaN, double.NaN, rec.Value.NumEl, rec.Value.NumEl, double.NaN);
            return new LayerRow(rec.Module, rec.Rank, rec.Shard, label, LayerVerdict.ShapeMismatch, engineShape, window.ExpectedEngineShape,
                refShape, policy, mismatch,
                $"engine {Shape.Format(engineShape)} vs expected {Shape.Format(window.ExpectedEngineShape)} (reference {Shape.Format(refShape)}, shard: {rec.Shard})");
        }

        var result = TensorComparer.Compare(label, window.EngineCompared(rec.Value), window.ReferenceSlice(reference), policy,
            oracle is null ? null : window.ReferenceSlice(oracle), bound);
        return new LayerRow(rec.Module, rec.Rank, rec.Shard, label, result.Passed ? LayerVerdict.Pass : LayerVerdict.Fail,
            engineShape, window.ExpectedEngineShape, refShape, policy, result, "");
    }

    /// <summary>The looser of the two dtypes' defaults: a bf16 engine tensor against a float32 reference is judged as bf16.</summary>
    public static TolerancePolicy DefaultPolicy(DType engine, DType reference)
    {
        TolerancePolicy a = Tolerances.For(engine), b = Tolerances.For(reference);
        return a.Rtol + a.Atol > b.Rtol + b.Atol ? a : b;
    }

    /// <summary>"module ([step s, ]rank r[, slice][, call n])": a decode step's record (<see cref="DecodeSteps"/>) names its step.</summary>
    private static string Label(CapturedActivation rec, string slice, int call)
    {
        var (step, module) = DecodeSteps.Parse(rec.Module);
        var parts = new List<string>();
        if (step > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"step {step}"));
        parts.Add(string.Create(CultureInfo.InvariantCulture, $"rank {rec.Rank}"));
        if (slice.Length > 0) parts.Add(slice);
        if (call > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"call {call}"));
        return $"{module} ({string.Join(", ", parts)})";
    }
}
