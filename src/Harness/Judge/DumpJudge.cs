using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Reports;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Judge;

/// <summary>A dump's verdict: the layer comparison, the ranks' recorded failures, the report record.</summary>
public sealed record DumpVerdict(LayerReport Layers, IReadOnlyList<string> RankErrors, ScenarioRecord Record)
{
    public bool Passed => Record.Passed;
}

/// <summary>
/// `harness judge --dump DIR --model HF_DIR`: a module-by-module dump in the harness format (docs/dump-format.md, written
/// by harness_dump.py in any PyTorch engine) judged against HF transformers on the same checkpoint and the same input
/// ids (saved in the dump). Each rank's records become <see cref="ActivationCapture"/> records with their placement as a
/// <see cref="ShardSpec"/> (a shard is compared with its slice of HF's tensor, rank by rank; partial sums are summed over
/// the ranks first), and <see cref="LayerComparison"/> judges them with the float64 oracle verdict, naming the first
/// divergent module and rank. A rank that failed inside a module (recorded in its index) is reported with that module.
/// Step 0 (the prompt's forward) is judged; later steps are listed but not compared. A folder holding transformers'
/// model debugger output instead (<see cref="ModelDebuggerDump"/>) is read as rank 0's dump.
/// </summary>
public static class DumpJudge
{
    public const string Format = "harness-dump/1";

    private sealed record Entry(string Module, int Step, int Call, int Rank, int WorldSize, string Tensor, string Kind, int? Dim, JsonObject Placement);

    /// <summary>Judges the dump; HF computes in <paramref name="dtype"/>, by default the dump's own (the index's
    /// engine.dtype, which `harness dump` writes), else float32.</summary>
    public static DumpVerdict Run(string dumpDirectory, string modelDirectory, ReferenceClient client, DType? dtype = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        var dir = Path.GetFullPath(dumpDirectory);
        if (!Directory.Exists(dir)) throw new InputException(dir, "no such dump folder");
        var indexes = Directory.GetFiles(dir, "rank-*.json").Order(StringComparer.Ordinal).ToArray();
        if (indexes.Length == 0 && ModelDebuggerDump.FindTree(dir) is { } tree)
        {
            // transformers' model debugger output (use_repr=False): read as a dump of rank 0
            var converted = Path.Combine(Path.GetTempPath(), $"harness-model-debugger-{Guid.NewGuid():N}");
            try
            {
                ModelDebuggerDump.Convert(tree, converted);
                var verdict = Run(converted, modelDirectory, client, dtype);
                return verdict with { Record = verdict.Record with { Id = $"judge/dump/{Path.GetFileName(dir.TrimEnd('/'))}", Layout = "model debugger, rank 0" } };
            }
            finally
            {
                if (Directory.Exists(converted)) Directory.Delete(converted, recursive: true);
            }
        }
        if (indexes.Length == 0)
            throw new InputException(dir, $"no rank-<R>.json index (docs/dump-format.md) and no transformers model debugger tree (*{ModelDebuggerDump.TreeSuffix}) in the dump folder");

        var entries = new List<Entry>();
        var errors = new List<string>();
        var failedModules = new List<string>();
        var files = new Dictionary<int, SafetensorsFile>();
        Tensor? inputIds = null;
        string inputName = "input_ids";
        int? world = null;
        try
        {
            foreach (var path in indexes)
            {
                JsonObject index;
                try
                {
                    index = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InputException(path, "is not a JSON object");
                }
                catch (System.Text.Json.JsonException e)
                {
                    throw new InputException(path, $"is not JSON: {e.Message.Split('\n')[0]}", e);
                }
                if ((string?)index["format"] != Format) throw new InputException(path, $"format is '{index["format"]}', expected '{Format}'");
                int rank = Int(path, index, "rank"), ws = Int(path, index, "world_size");
                if (world is int w && w != ws) throw new InputException(path, $"world_size {ws} differs from another rank's {w}");
                world = ws;
                var tensorsPath = Path.Combine(dir, (string?)index["tensors_file"] ?? throw new InputException(path, "tensors_file is missing"));
                files[rank] = SafetensorsFile.Open(tensorsPath);
                if (rank == 0)
                {
                    dtype ??= (string?)index["engine"]?["dtype"] switch { "bfloat16" or "bf16" => DType.BFloat16, _ => null };
                    if (index["inputs"]?["0"]?["input_ids"] is JsonValue ids) inputIds = files[rank].ReadTensor((string)ids!);
                    else if (index["inputs"]?["0"]?["inputs_embeds"] is JsonValue embeds)
                        (inputIds, inputName) = (files[rank].ReadTensor((string)embeds!), "inputs_embeds");
                }
                foreach (var node in index["entries"] as JsonArray ?? throw new InputException(path, "entries is missing"))
                {
                    var e = node as JsonObject ?? throw new InputException(path, "an entry is not an object");
                    var placement = e["placement"] as JsonObject ?? throw new InputException(path, $"entry {e["module"]} has no placement");
                    entries.Add(new Entry((string)e["module"]!, (int)e["step"]!, (int)e["call"]!, rank, ws, (string)e["tensor"]!,
                        (string)placement["kind"]!, placement["dim"] is JsonValue d ? (int)d : null, placement));
                }
                foreach (var node in index["errors"] as JsonArray ?? [])
                {
                    if ((string?)node?["module"] is { } failed) failedModules.Add(failed);
                    errors.Add(string.Create(CultureInfo.InvariantCulture,
                        $"rank {rank} failed in {(string?)node?["module"] ?? "(outside any module)"} at step {node?["step"]}: {node?["type"]}: {node?["message"]}"));
                }
            }
            if (inputIds is null) throw new InputException(Path.Combine(dir, "rank-0.json"), "inputs[\"0\"].input_ids (or inputs_embeds) is missing: the judge runs HF on the dumped inputs");
            if (files.Count != world) throw new InputException(dir, $"{files.Count} rank indexes for a world of {world}");

            // Forward order: rank 0's order of first appearance at step 0.
            var step0 = entries.Where(e => e.Step == 0 && e.Call == 0).ToList();
            var order = step0.OrderBy(e => e.Rank).Select(e => e.Module).Distinct(StringComparer.Ordinal).ToList();
            // A module a rank failed in recorded nothing: it follows the last recorded one, so HF's output of it is the
            // first row the dump lacks (Missing, a failure) and the first divergence names it.
            foreach (var m in failedModules.Where(m => !order.Contains(m, StringComparer.Ordinal)).Distinct(StringComparer.Ordinal)) order.Add(m);
            var capture = new ActivationCapture();
            foreach (var group in step0.GroupBy(e => e.Module, StringComparer.Ordinal))
            {
                var partial = group.Where(e => e.Kind == "partial").ToList();
                if (partial.Count > 0)
                {
                    // partial sums: the whole tensor is their sum over the ranks
                    Tensor sum = ToFloat(files[partial[0].Rank].ReadTensor(partial[0].Tensor));
                    foreach (var e in partial.Skip(1)) sum = Engine.Ops.Elementwise.Add(sum, ToFloat(files[e.Rank].ReadTensor(e.Tensor)));
                    capture.Record(group.Key, sum, ShardSpec.Whole, rank: 0);
                }
                foreach (var e in group.Where(e => e.Kind != "partial"))
                {
                    var value = files[e.Rank].ReadTensor(e.Tensor);                 // in its own dtype, as the engine held it
                    int PlacementInt(string field) => e.Placement[field] is JsonValue v && v.TryGetValue<int>(out var i) ? i
                        : throw new InputException(Path.Combine(dir, $"rank-{e.Rank}.json"), $"{e.Module}: placement '{e.Kind}' needs an integer {field}");
                    ShardSpec shard = e.Kind switch
                    {
                        // rank r of the world holds shard r by default; "index"/"of" when the shards are not the world's
                        // ranks (TP inside PP: the TP group's rank and size)
                        "shard" => new ShardSpec.Sharded(PlacementInt("dim"), e.Placement.ContainsKey("index") ? PlacementInt("index") : e.Rank,
                            e.Placement.ContainsKey("of") ? PlacementInt("of") : e.WorldSize),
                        "rows" => new ShardSpec.Rows(PlacementInt("start"), PlacementInt("count"), PlacementInt("dim")),
                        "replicate" => ShardSpec.Whole,
                        _ => throw new InputException(dir, $"{e.Module} (rank {e.Rank}) has placement kind '{e.Kind}' (replicate, shard, rows or partial)"),
                    };
                    capture.Record(group.Key, value, shard, rank: e.Rank);
                }
            }

            // HF on the same ids, capturing the same modules, with the float64 oracle.
            var shared = client.ShareDirectory(Path.GetFullPath(modelDirectory));
            client.Oracle = true;
            var forward = client.Forward(shared, dtype ?? DType.Float32, inputIds, order);
            var layers = LayerComparison.Run(forward.Captured, capture, order);

            var first = layers.FirstDivergence;
            string reason = errors.Count > 0 ? string.Join("; ", errors)
                : first is null ? string.Create(CultureInfo.InvariantCulture, $"{layers.Rows.Count(r => r.Verdict == LayerVerdict.Pass)} module records within the oracle verdict")
                : $"{first.Label}: {ModuleRecord.VerdictOf(first.Verdict)}: {(first.Result?.Oracle?.ToString().Trim() ?? first.Note)}";
            var record = new ScenarioRecord(
                Id: $"judge/dump/{Path.GetFileName(dir.TrimEnd('/'))}",
                Model: Path.GetFileName(Path.GetFullPath(modelDirectory).TrimEnd('/')),
                Layout: string.Create(CultureInfo.InvariantCulture, $"dump, {world} rank(s)"),
                Dtype: Scenario.DTypeTag(dtype ?? DType.Float32),
                Input: inputName == "input_ids" ? $"input_ids [{string.Join(",", inputIds.ToInt64Array())}]" : $"inputs_embeds {Shape.Format(inputIds.Shape)}",
                Fault: null,
                ExpectFailure: false,
                Passed: errors.Count == 0 && layers.Passed,
                Reason: TokenRecord.OneLine(reason),
                ElapsedSeconds: 0,
                EngineError: errors.Count == 0 ? null : TokenRecord.OneLine(string.Join("; ", errors)),
                FirstBadModule: first?.Module,
                Modules: layers.Rows.Select(ModuleRecord.From).ToArray(),
                Tokens: null);
            return new DumpVerdict(layers, errors, record);
        }
        finally
        {
            foreach (var f in files.Values) f.Dispose();
        }
    }

    private static Tensor ToFloat(Tensor t) => t.DType == DType.Float32 ? t : t.To(DType.Float32);

    private static int Int(string path, JsonObject o, string field) =>
        o[field] is JsonValue v && v.TryGetValue<int>(out var i) ? i : throw new InputException(path, $"{field} is missing or not an integer");

    /// <summary>The printed verdict: the ranks' failures, the first divergent module and rank, the layer table.</summary>
    public static string Describe(DumpVerdict v)
    {
        var sb = new StringBuilder();
        sb.Append(v.Passed ? "PASS" : "FAIL").Append("  ").Append(v.Record.Id).Append(": ").Append(v.Record.Reason).Append('\n');
        foreach (var e in v.RankErrors) sb.Append("  ").Append(e).Append('\n');
        if (v.Layers.FirstDivergence is { } first) sb.Append("  first divergent module: ").Append(first.Describe().TrimEnd()).Append('\n');
        sb.Append(v.Layers.ToString());
        return sb.ToString();
    }
}
