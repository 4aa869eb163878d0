using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>What became of one config field: the value the engine was given and the scenario that noticed, or MISSED.</summary>
public sealed record ConfigMutationRow(
    string Model, string Field, string TrueValue, string UsedValue, string Basis, bool OnDefault, string? CaughtBy, string? Where)
{
    /// <summary>Absent from the config although HF knows the field: the engine read a fallback the tiny model never tests.</summary>
    public bool Absent => Basis == ConfigMutations.AbsentBasis;

    /// <summary>HF has no such field for this model type, or its default is null: nothing to observe.</summary>
    public bool NotApplicable => Basis == ConfigMutations.NotApplicableBasis;

    /// <summary>No scenario saw the field change, or the tiny config leaves out a field HF knows (its fallback is untested).</summary>
    public bool Missed => !NotApplicable && (CaughtBy is null || Absent);

    /// <summary>
    /// caught; "caught (on default)" where the tiny config holds HF's default (a perturbed value was caught, so the engine
    /// reads the field, but no scenario runs it off its default); MISSED; ABSENT; n/a.
    /// </summary>
    public string Status => NotApplicable ? "n/a" : Absent ? "ABSENT" : CaughtBy is null ? "MISSED" : OnDefault ? "caught (on default)" : "caught";
}

/// <summary>
/// Proves every config field the engine reads is observable (`harness run --config-mutations`). For each catalog model
/// folder: run its scenarios once, watching which config.json fields the engine reads (<see cref="ConfigReads"/>);
/// then for each field give the ENGINE a copy of the folder whose config.json has that field at HF's library default
/// (the value HF takes when the key is absent, derived values included: the reference's `config_defaults`), or a
/// perturbed value where the true one already equals it, while the reference keeps the true config. Some scenario must
/// then fail, else the field is MISSED. A field HF knows but the config leaves out is ABSENT (the engine's fallback is
/// never tested) and fails like MISSED; a field whose true value is HF's default is flagged "on default" when only its
/// perturbed value was caught. model_type and architectures only choose the classes, so they are not mutated.
/// </summary>
public static class ConfigMutations
{
    public const string DefaultBasis = "library default", PerturbedBasis = "perturbed", AbsentBasis = "absent",
        NotApplicableBasis = "not in HF's config";

    private static readonly HashSet<string> Identity = new(StringComparer.Ordinal) { "model_type", "architectures" };

    public static IReadOnlyList<ConfigMutationRow> Run(IEnumerable<Scenario> scenarios, ScenarioContext context, Action<string>? progress = null)
    {
        var client = context.Client ?? throw new InvalidOperationException("--config-mutations needs the live reference (HF's defaults come from it)");
        var candidates = scenarios.Where(s => s.Fault is null).ToList();
        using var scratch = new ModelFolderCopies();

        // 1. Discovery: which model folders each scenario's engine loads, and which fields it reads there.
        var users = new Dictionary<string, List<Scenario>>(StringComparer.Ordinal);
        var fields = new Dictionary<string, SortedSet<string>>(StringComparer.Ordinal);
        foreach (var scenario in candidates)
        {
            var watches = new ConcurrentDictionary<string, ConfigReads.Watch>(StringComparer.Ordinal);
            var watching = context.WithConfigMutation(dir => watches.GetOrAdd(dir, d =>
                ConfigReads.Start(Path.Combine(scratch.Copy(d, Encoding.UTF8.GetString(InputFiles.ReadCapped(Path.Combine(d, "config.json"), InputFiles.ConfigMaxBytes, "config file"))), "config.json"))) is { } w
                ? Path.GetDirectoryName(w.Path)! : dir);
            progress?.Invoke($"discover {scenario.Id}");
            var outcome = ScenarioRunner.Run(scenario, watching);
            foreach (var (dir, watch) in watches)
            {
                if (!outcome.Result.Passed) { watch.Dispose(); continue; }      // a failing scenario cannot tell a mutation apart
                (users.TryGetValue(dir, out var list) ? list : users[dir] = []).Add(scenario);
                (fields.TryGetValue(dir, out var set) ? set : fields[dir] = new SortedSet<string>(StringComparer.Ordinal)).UnionWith(watch.Fields);
                watch.Dispose();
            }
        }

        // 2. One mutation per (folder, field), until some folder proves the field (off its default, and caught).
        var rows = new List<ConfigMutationRow>();
        var proven = new HashSet<string>(StringComparer.Ordinal);
        var names = context.BuiltModels().ToDictionary(m => m.Directory, m => m.Name, StringComparer.Ordinal);
        foreach (var (dir, read) in fields.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var config = JsonNode.Parse(InputFiles.ReadCapped(Path.Combine(dir, "config.json"), InputFiles.ConfigMaxBytes, "config file"))!.AsObject();
            var paths = read.Where(p => !Identity.Contains(p.Split('.')[^1])).ToList();
            var defaults = client.Invoke("config_defaults", new JsonObject
            {
                ["config"] = config.DeepClone(),
                ["paths"] = new JsonArray(paths.Select(p => (JsonNode)JsonValue.Create(p)!).ToArray()),
            }).Result["defaults"]!.AsObject();
            string model = names.GetValueOrDefault(dir) ?? Path.GetFileName(dir.TrimEnd('/'));
            foreach (var path in paths.Where(p => !proven.Contains(p)))
            {
                var truth = Find(config, path);
                var hf = defaults[path]?.AsObject();
                JsonNode? hfDefault = hf?["value"];
                bool hfKnows = hf is not null && hf.ContainsKey("value");
                if (truth is JsonObject) continue;                               // a section; its leaves are fields of their own
                if (truth is null)
                {
                    bool applicable = hfKnows && hfDefault is not null;
                    rows.Add(new ConfigMutationRow(model, path, "(absent)", "-", applicable ? AbsentBasis : NotApplicableBasis, false, null,
                        applicable ? $"HF's default is {Text(hfDefault)}: set it in the tiny config to a value no default equals" : null));
                    continue;
                }
                bool onDefault = hfKnows && JsonNode.DeepEquals(Normal(truth), Normal(hfDefault));
                JsonNode? used = hfKnows && !onDefault && hfDefault is not null ? hfDefault.DeepClone() : Perturb(path, truth);
                string basis = hfKnows && !onDefault && hfDefault is not null ? DefaultBasis : PerturbedBasis;
                if (used is null)
                {
                    rows.Add(new ConfigMutationRow(model, path, Text(truth), "-", basis, onDefault, null, "no mutation of this value is known"));
                    continue;
                }
                var mutated = config.DeepClone().AsObject();
                Set(mutated, path, used.DeepClone());
                var copy = scratch.Copy(dir, mutated.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                var mutating = context.WithConfigMutation(d => string.Equals(d, dir, StringComparison.Ordinal) ? copy : d);
                string? caughtBy = null, where = null;
                foreach (var scenario in users[dir])
                {
                    progress?.Invoke($"{model}: {path} = {Text(used)} -> {scenario.Id}");
                    ScenarioResult result;
                    try { result = ScenarioRunner.Run(scenario, mutating).Result; }
                    catch (Exception e) { caughtBy = scenario.Id; where = $"error: {e.Message.Split('\n')[0]}"; break; }
                    if (result.ComparisonPassed) continue;
                    caughtBy = scenario.Id;
                    where = result.FirstBadModule ?? (result.EngineError is { } err ? $"error: {err}" : result.Reason);
                    break;
                }
                rows.Add(new ConfigMutationRow(model, path, Text(truth), Text(used), basis, onDefault, caughtBy, where));
                if (caughtBy is not null && !onDefault) proven.Add(path);
            }
        }
        // One row per field: the folder that proved it, else the most telling failure.
        return rows.GroupBy(r => r.Field, StringComparer.Ordinal)
            .Select(g => g.FirstOrDefault(r => !r.Missed && !r.NotApplicable) ?? g.FirstOrDefault(r => !r.NotApplicable) ?? g.First())
            .OrderBy(r => r.NotApplicable).ThenBy(r => r.Field, StringComparer.Ordinal).ToList();
    }

    /// <summary>The table: model folder, field, true value, value given to the engine (and why), status, who caught it.</summary>
    public static string Format(IReadOnlyList<ConfigMutationRow> rows)
    {
        string[] header = ["model", "field", "true value", "engine given", "status", "caught by (first bad module)"];
        var cells = rows.Select(r => new[]
        {
            r.Model, r.Field, Clip(r.TrueValue), r.UsedValue == "-" ? "-" : $"{Clip(r.UsedValue)} ({r.Basis})", r.Status,
            r.CaughtBy is null ? r.Where ?? "-" : $"{r.CaughtBy} ({r.Where})",
        }).ToList();
        var widths = header.Select((h, i) => cells.Select(c => c[i].Length).Append(h.Length).Max()).ToArray();
        var sb = new StringBuilder();
        void Row(string[] c) => sb.AppendJoin("  ", c.Select((x, i) => i == c.Length - 1 ? x : x.PadRight(widths[i]))).Append('\n');
        Row(header);
        Row(widths.Select(w => new string('-', w)).ToArray());
        foreach (var c in cells) Row(c);
        int missed = rows.Count(r => r.Missed);
        sb.Append(CultureInfo.InvariantCulture,
            $"{rows.Count(r => !r.NotApplicable)} fields read: {rows.Count(r => r.Status == "caught")} caught off their default, " +
            $"{rows.Count(r => r.OnDefault && !r.Missed)} caught only when perturbed (on default), {missed} missed or absent\n");
        return sb.ToString();

        static string Clip(string s) => s.Length <= 40 ? s : s[..37] + "...";
    }

    private static JsonNode? Find(JsonNode root, string path)
    {
        JsonNode? node = root;
        foreach (var key in path.Split('.'))
            node = node switch
            {
                JsonObject o => o.TryGetPropertyValue(key, out var v) ? v : null,
                JsonArray a when int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < a.Count => a[i],
                _ => null,
            };
        return node;
    }

    private static void Set(JsonNode root, string path, JsonNode value)
    {
        var keys = path.Split('.');
        var parent = Find(root, string.Join('.', keys[..^1])) ?? (keys.Length == 1 ? root : null)
            ?? throw new InvalidOperationException($"config has no {string.Join('.', keys[..^1])}");
        if (keys.Length == 1) parent = root;
        if (parent is JsonArray a) a[int.Parse(keys[^1], CultureInfo.InvariantCulture)] = value;
        else parent.AsObject()[keys[^1]] = value;
    }

    /// <summary>Numbers compared as numbers (HF writes 1e-06 and 1e-6 alike, 2 and 2.0 alike).</summary>
    private static JsonNode? Normal(JsonNode? node) => node switch
    {
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => JsonValue.Create(v.GetValue<double>()),
        JsonArray a => new JsonArray(a.Select(Normal).ToArray()),
        JsonObject o => new JsonObject(o.Select(kv => KeyValuePair.Create(kv.Key, Normal(kv.Value)))),
        _ => node?.DeepClone(),
    };

    /// <summary>A value no default equals, for fields whose true value IS the default (or HF has none): integers +1 (x2 from 1000 up),
    /// reals x1.5, booleans flipped, activation names, rope and layer types, use_bidirectional_attention swapped, lists with each element perturbed.</summary>
    private static JsonNode? Perturb(string path, JsonNode value)
    {
        switch (value)
        {
            case JsonValue v when v.GetValueKind() == JsonValueKind.Number:
                var text = v.ToJsonString();
                if (!text.Contains('.') && !text.Contains('e') && !text.Contains('E') && long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long i))
                    return JsonValue.Create(Math.Abs(i) >= 1000 ? i * 2 : i + 1);   // +1 moves a rope_theta of 20000 too little to see
                double d = v.GetValue<double>();
                return JsonValue.Create(d == 0 ? 0.5 : d * 1.5);
            case JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False:
                return JsonValue.Create(!v.GetValue<bool>());
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                var s = v.GetValue<string>();
                string[] acts = ["silu", "gelu_pytorch_tanh", "gelu", "relu", "quick_gelu"];
                if (acts.Contains(s)) return JsonValue.Create(acts[(Array.IndexOf(acts, s) + 1) % acts.Length]);
                if (path.EndsWith("rope_type", StringComparison.Ordinal)) return JsonValue.Create(s == "default" ? "linear" : "default");
                // Gemma's use_bidirectional_attention: "vision" (image tokens see each other both ways) <-> "all" (no causal mask)
                string[] bidirectional = ["vision", "all"];
                if (path.EndsWith("use_bidirectional_attention", StringComparison.Ordinal) && bidirectional.Contains(s))
                    return JsonValue.Create(bidirectional[1 - Array.IndexOf(bidirectional, s)]);
                // Gemma3n's vision_config.architecture, a timm model name: the encoder <-> timm's classifier of the same stack
                string[] timm = ["mobilenetv5_300m_enc", "mobilenetv5_300m"];
                if (path.EndsWith("architecture", StringComparison.Ordinal) && timm.Contains(s))
                    return JsonValue.Create(timm[1 - Array.IndexOf(timm, s)]);
                string[] layerTypes = ["full_attention", "sliding_attention"];
                if (layerTypes.Contains(s)) return JsonValue.Create(layerTypes[1 - Array.IndexOf(layerTypes, s)]);
                return null;
            case JsonArray a:
                var items = a.Select(x => x is null ? null : Perturb(path, x)).ToArray();
                return items.Any(x => x is null) ? null : new JsonArray(items);
            default:
                return null;
        }
    }

    private static string Text(JsonNode? node) => node?.ToJsonString() ?? "null";
}
