using System.Globalization;
using System.Text.Json;

namespace Harness.Reports;

/// <summary>The reading half of <see cref="ReportJson"/>: JsonElement to report records, field by field.</summary>
internal static class ReportJsonReader
{
    public static AccuracyReport Report(JsonElement root)
    {
        var env = Get(root, "environment");
        var environment = new ReportEnvironment(Str(env, "engine_version"), Str(env, "python_version"), Str(env, "torch_version"),
            Str(env, "transformers_version"), Str(env, "os"), Str(env, "cpu_model"), (int)Long(env, "processor_count"), Str(env, "gemm_kernel"));
        var scenarios = Array(root, "scenarios").Select(Scenario).ToArray();
        return new AccuracyReport(Time(Str(root, "generated_at")), environment, scenarios)
        {
            Baseline = Opt(root, "baseline") is { } b ? Baseline(b) : null,
        };
    }

    private static ScenarioRecord Scenario(JsonElement s) => new(
        Str(s, "id"), Str(s, "model"), Str(s, "layout"), Str(s, "dtype"), Str(s, "input"), OptStr(s, "fault"),
        Get(s, "expect_failure").GetBoolean(), Str(s, "verdict") == "pass", Str(s, "reason"), OptDouble(s, "elapsed_seconds") ?? double.NaN,
        OptStr(s, "engine_error"), OptStr(s, "first_bad_module"), Array(s, "modules").Select(Module).ToArray(),
        Opt(s, "tokens") is { } t ? Tokens(t) : null)
    {
        StepsJudged = Opt(s, "decode_steps_judged") is { ValueKind: JsonValueKind.True },
        FirstDivergentStep = Opt(s, "first_divergent_decode_step") is { } d ? new StepDivergence((int)Long(d, "step"), Str(d, "module"), (int)Long(d, "rank")) : null,
    };

    private static ModuleRecord Module(JsonElement m) => new(
        Str(m, "module"), (int)Long(m, "rank"), Str(m, "label"), OptInts(m, "engine_shape"), OptInts(m, "expected_shape"),
        OptDouble(m, "max_abs"), OptDouble(m, "max_rel"), OptDouble(m, "rel_l2"), OptLong(m, "mismatches"), OptLong(m, "total"),
        Opt(m, "tolerance") is { } p ? new ToleranceRecord(Str(p, "name"), OptDouble(p, "rtol") ?? double.NaN, OptDouble(p, "atol") ?? double.NaN) : null,
        Str(m, "verdict"), OptStr(m, "note") ?? "")
    {
        Oracle = Opt(m, "oracle") is { } o
            ? new OracleRecord(OptDouble(o, "engine_rel_l2") ?? double.NaN, OptDouble(o, "reference_rel_l2") ?? double.NaN,
                OptDouble(o, "rel_l2_bound") ?? double.NaN, OptDouble(o, "engine_max_abs") ?? double.NaN,
                OptDouble(o, "reference_max_abs") ?? double.NaN, OptDouble(o, "max_abs_bound") ?? double.NaN,
                OptLong(o, "outliers") ?? 0, OptLong(o, "outlier_budget") ?? 0, OptDouble(o, "margin") ?? double.NaN,
                Get(o, "passed").GetBoolean())
            {
                EngineScaleBias = OptDouble(o, "engine_scale_bias") ?? double.NaN,
                ReferenceScaleBias = OptDouble(o, "reference_scale_bias") ?? double.NaN,
                BiasBound = OptDouble(o, "scale_bias_bound") ?? double.NaN,
            }
            : null,
        Step = (int)(OptLong(m, "step") ?? 0),
    };

    private static TokenRecord Tokens(JsonElement t) => new(
        OptLongs(t, "reference_tokens"), OptLongs(t, "engine_tokens"), (int)Long(t, "reference_length"), (int)Long(t, "engine_length"),
        (int)Long(t, "matched_prefix"), (int?)OptLong(t, "first_divergent_step"), OptLong(t, "reference_token"), OptLong(t, "engine_token"),
        Str(t, "verdict"), Str(t, "reason"), TopK(t, "reference_top_k"), TopK(t, "engine_top_k"), OptDouble(t, "max_logprob_diff") ?? double.NaN);

    private static BaselineComparison Baseline(JsonElement b) => new(
        OptDouble(b, "growth_factor") ?? double.NaN,
        OptStr(b, "baseline_generated_at") is { } at ? Time(at) : null,
        Array(b, "scenarios").Select(d => new ScenarioDelta(Str(d, "id"), Str(d, "baseline_verdict"), Str(d, "current_verdict"),
            OptDouble(d, "baseline_max_rel_l2"), OptDouble(d, "current_max_rel_l2"), OptDouble(d, "growth"),
            Get(d, "regression").GetBoolean(), Str(d, "reason"))).ToArray(),
        Array(b, "added").Select(e => e.GetString() ?? "").ToArray(),
        Array(b, "removed").Select(e => e.GetString() ?? "").ToArray());

    private static TopKEntry[] TopK(JsonElement e, string name) =>
        Array(e, name).Select(x => new TopKEntry(Long(x, "token"), OptDouble(x, "logprob") ?? double.NaN)).ToArray();

    private static DateTime Time(string s) =>
        DateTime.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
            ? t : throw new FormatException($"report.json: '{s}' is not an ISO-8601 time");

    private static JsonElement Get(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) ? v
            : throw new FormatException($"report.json: field '{name}' is missing");

    private static JsonElement? Opt(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string Str(JsonElement e, string name) =>
        OptStr(e, name) ?? throw new FormatException($"report.json: field '{name}' is missing or null");

    private static string? OptStr(JsonElement e, string name) => Opt(e, name) is { } v
        ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw new FormatException($"report.json: field '{name}' is not a string")
        : null;

    private static long Long(JsonElement e, string name) =>
        OptLong(e, name) ?? throw new FormatException($"report.json: field '{name}' is missing or null");

    private static long? OptLong(JsonElement e, string name) => Opt(e, name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long l) ? l : throw new FormatException($"report.json: field '{name}' is not an integer")
        : null;

    // report.json writes NaN and infinities as null: a number that overflows to infinity (1E905) is a corrupt file.
    private static double? OptDouble(JsonElement e, string name) => Opt(e, name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d) ? d
            : throw new FormatException($"report.json: field '{name}' is not a finite number ({Raw(v)})")
        : null;

    private static string Raw(JsonElement v)
    {
        var raw = v.GetRawText();
        return raw.Length > 40 ? raw[..37] + "..." : raw;
    }

    private static IEnumerable<JsonElement> Array(JsonElement e, string name)
    {
        var v = Get(e, name);
        return v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToArray() : throw new FormatException($"report.json: field '{name}' is not an array");
    }

    private static int[]? OptInts(JsonElement e, string name) =>
        Opt(e, name) is null ? null : Array(e, name).Select(x => x.GetInt32()).ToArray();

    private static long[]? OptLongs(JsonElement e, string name) =>
        Opt(e, name) is null ? null : Array(e, name).Select(x => x.GetInt64()).ToArray();
}
