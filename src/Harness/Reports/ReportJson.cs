using System.Globalization;
using System.Text.Json;

namespace Harness.Reports;

/// <summary>
/// report.json: the report in snake_case fields, written with <see cref="Utf8JsonWriter"/> and read with
/// <see cref="JsonDocument"/> (no reflection, so the trimmed CLI keeps working). NaN and infinities are written as null;
/// absent numbers are null too. Times are ISO-8601 UTC ("O" format). schema_version changes when a field does.
/// </summary>
public static class ReportJson
{
    public const int SchemaVersion = 1;

    /// <summary>The report as indented UTF-8 JSON.</summary>
    public static byte[] Write(AccuracyReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("schema_version", SchemaVersion);
            w.WriteString("generated_at", Time(report.GeneratedAt));
            WriteEnvironment(w, report.Environment);
            w.WriteStartObject("summary");
            w.WriteNumber("total", report.Scenarios.Count);
            w.WriteNumber("passed", report.PassedCount);
            w.WriteNumber("failed", report.FailedCount);
            w.WriteEndObject();
            w.WriteStartArray("scenarios");
            foreach (var s in report.Scenarios) WriteScenario(w, s);
            w.WriteEndArray();
            if (report.Baseline is { } b) WriteBaseline(w, b);
            w.WriteEndObject();
        }
        return stream.ToArray();
    }

    private static void WriteEnvironment(Utf8JsonWriter w, ReportEnvironment e)
    {
        w.WriteStartObject("environment");
        w.WriteString("engine_version", e.EngineVersion);
        w.WriteString("python_version", e.PythonVersion);
        w.WriteString("torch_version", e.TorchVersion);
        w.WriteString("transformers_version", e.TransformersVersion);
        w.WriteString("os", e.Os);
        w.WriteString("cpu_model", e.CpuModel);
        w.WriteNumber("processor_count", e.ProcessorCount);
        w.WriteString("gemm_kernel", e.GemmKernel);
        w.WriteEndObject();
    }

    private static void WriteScenario(Utf8JsonWriter w, ScenarioRecord s)
    {
        w.WriteStartObject();
        w.WriteString("id", s.Id);
        w.WriteString("model", s.Model);
        w.WriteString("layout", s.Layout);
        w.WriteString("dtype", s.Dtype);
        w.WriteString("input", s.Input);
        w.WriteString("fault", s.Fault);
        w.WriteBoolean("expect_failure", s.ExpectFailure);
        w.WriteString("verdict", s.Verdict);
        w.WriteString("reason", s.Reason);
        Number(w, "elapsed_seconds", s.ElapsedSeconds);
        w.WriteString("engine_error", s.EngineError);
        w.WriteString("first_bad_module", s.FirstBadModule);
        w.WriteBoolean("decode_steps_judged", s.StepsJudged);
        if (s.FirstDivergentStep is { } d)
        {
            w.WriteStartObject("first_divergent_decode_step");
            w.WriteNumber("step", d.Step);
            w.WriteString("module", d.Module);
            w.WriteNumber("rank", d.Rank);
            w.WriteEndObject();
        }
        else w.WriteNull("first_divergent_decode_step");
        Number(w, "max_rel_l2", s.MaxRelL2);
        w.WriteStartArray("modules");
        foreach (var m in s.Modules) WriteModule(w, m);
        w.WriteEndArray();
        if (s.Tokens is { } t) WriteTokens(w, t);
        else w.WriteNull("tokens");
        w.WriteEndObject();
    }

    private static void WriteModule(Utf8JsonWriter w, ModuleRecord m)
    {
        w.WriteStartObject();
        w.WriteString("module", m.Module);
        w.WriteNumber("step", m.Step);
        w.WriteNumber("rank", m.Rank);
        w.WriteString("label", m.Label);
        Ints(w, "engine_shape", m.EngineShape);
        Ints(w, "expected_shape", m.ExpectedShape);
        Number(w, "max_abs", m.MaxAbs);
        Number(w, "max_rel", m.MaxRel);
        Number(w, "rel_l2", m.RelL2);
        Number(w, "mismatches", m.Mismatches);
        Number(w, "total", m.Total);
        if (m.Tolerance is { } p)
        {
            w.WriteStartObject("tolerance");
            w.WriteString("name", p.Name);
            Number(w, "rtol", p.Rtol);
            Number(w, "atol", p.Atol);
            w.WriteEndObject();
        }
        else w.WriteNull("tolerance");
        if (m.Oracle is { } o)
        {
            w.WriteStartObject("oracle");
            Number(w, "engine_rel_l2", o.EngineRelL2);
            Number(w, "reference_rel_l2", o.ReferenceRelL2);
            Number(w, "rel_l2_bound", o.L2Bound);
            Number(w, "engine_max_abs", o.EngineMaxAbs);
            Number(w, "reference_max_abs", o.ReferenceMaxAbs);
            Number(w, "max_abs_bound", o.AbsBound);
            w.WriteNumber("outliers", o.Outliers);
            w.WriteNumber("outlier_budget", o.OutlierBudget);
            Number(w, "engine_scale_bias", o.EngineScaleBias);
            Number(w, "reference_scale_bias", o.ReferenceScaleBias);
            Number(w, "scale_bias_bound", o.BiasBound);
            Number(w, "margin", o.Margin);
            w.WriteBoolean("passed", o.Passed);
            w.WriteEndObject();
        }
        else w.WriteNull("oracle");
        w.WriteString("verdict_basis", m.VerdictBasis);
        w.WriteString("verdict", m.Verdict);
        w.WriteString("note", m.Note);
        w.WriteEndObject();
    }

    private static void WriteTokens(Utf8JsonWriter w, TokenRecord t)
    {
        w.WriteStartObject("tokens");
        Longs(w, "reference_tokens", t.ReferenceTokens);
        Longs(w, "engine_tokens", t.EngineTokens);
        w.WriteNumber("reference_length", t.ReferenceLength);
        w.WriteNumber("engine_length", t.EngineLength);
        w.WriteNumber("matched_prefix", t.MatchedPrefix);
        Number(w, "first_divergent_step", t.FirstDivergentStep);
        Number(w, "reference_token", t.ReferenceToken);
        Number(w, "engine_token", t.EngineToken);
        w.WriteString("verdict", t.Verdict);
        w.WriteString("reason", t.Reason);
        TopK(w, "reference_top_k", t.ReferenceTopK);
        TopK(w, "engine_top_k", t.EngineTopK);
        Number(w, "max_logprob_diff", t.MaxLogprobDiff);
        w.WriteEndObject();
    }

    private static void WriteBaseline(Utf8JsonWriter w, BaselineComparison b)
    {
        w.WriteStartObject("baseline");
        Number(w, "growth_factor", b.GrowthFactor);
        if (b.BaselineGeneratedAt is DateTime at) w.WriteString("baseline_generated_at", Time(at));
        else w.WriteNull("baseline_generated_at");
        w.WriteNumber("regressions", b.RegressionCount);
        w.WriteStartArray("scenarios");
        foreach (var d in b.Scenarios)
        {
            w.WriteStartObject();
            w.WriteString("id", d.Id);
            w.WriteString("baseline_verdict", d.BaselineVerdict);
            w.WriteString("current_verdict", d.CurrentVerdict);
            Number(w, "baseline_max_rel_l2", d.BaselineMaxRelL2);
            Number(w, "current_max_rel_l2", d.CurrentMaxRelL2);
            Number(w, "growth", d.Growth);
            w.WriteBoolean("regression", d.Regression);
            w.WriteString("reason", d.Reason);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        Strings(w, "added", b.Added);
        Strings(w, "removed", b.Removed);
        w.WriteEndObject();
    }

    private static string Time(DateTime t) => t.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture);

    private static void Number(Utf8JsonWriter w, string name, double? v)
    {
        if (v is double d && double.IsFinite(d)) w.WriteNumber(name, d);
        else w.WriteNull(name);
    }

    private static void Number(Utf8JsonWriter w, string name, long? v)
    {
        if (v is long l) w.WriteNumber(name, l);
        else w.WriteNull(name);
    }

    private static void Number(Utf8JsonWriter w, string name, int? v) => Number(w, name, (long?)v);

    private static void Ints(Utf8JsonWriter w, string name, int[]? values)
    {
        if (values is null) { w.WriteNull(name); return; }
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteNumberValue(v);
        w.WriteEndArray();
    }

    private static void Longs(Utf8JsonWriter w, string name, IReadOnlyList<long>? values)
    {
        if (values is null) { w.WriteNull(name); return; }
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteNumberValue(v);
        w.WriteEndArray();
    }

    private static void Strings(Utf8JsonWriter w, string name, IReadOnlyList<string> values)
    {
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteStringValue(v);
        w.WriteEndArray();
    }

    private static void TopK(Utf8JsonWriter w, string name, IReadOnlyList<TopKEntry> entries)
    {
        w.WriteStartArray(name);
        foreach (var e in entries)
        {
            w.WriteStartObject();
            w.WriteNumber("token", e.Token);
            Number(w, "logprob", e.Logprob);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>Parses report.json; throws <see cref="FormatException"/> naming the first missing or mistyped field.</summary>
    public static AccuracyReport Read(ReadOnlyMemory<byte> json)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new FormatException($"report.json: is not valid JSON: {e.Message}", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new FormatException($"report.json: must be a JSON object, but is {root.ValueKind}");
            if (!root.TryGetProperty("schema_version", out var v) || v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int version))
                throw new FormatException("report.json: field 'schema_version' is missing or not an integer");
            if (version != SchemaVersion)
                throw new FormatException($"report.json: field 'schema_version' is {version}; this harness reads version {SchemaVersion}");
            return ReportJsonReader.Report(root);
        }
    }
}
