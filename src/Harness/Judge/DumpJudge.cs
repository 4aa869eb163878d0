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
using Harness.Commands;
using Harness.Scenarios;

namespace Harness.Judge;

/// <summary>A dump's verdict: the prompt's layer comparison (step 0), the ranks' recorded failures, the report record,
/// and every decode step's modules (<see cref="Steps"/>).</summary>
public sealed record DumpVerdict(LayerReport Layers, IReadOnlyList<string> RankErrors, ScenarioRecord Record)
{
    public bool Passed => Record.Passed;

    /// <summary>Decode steps 1.. judged per module (<see cref="DecodeSteps"/>); null when the dump holds the prompt's forward only.</summary>
    public LayerReport? Steps { get; init; }

    /// <summary>The engine's own tokens judged against the reference's (`judge --gguf`: llama.cpp's choices); null for a dump
    /// that carries no choices.</summary>
    public TokenReport? Tokens { get; init; }

    /// <summary>What llama.cpp wrote (`judge --gguf`); null for any other dump.</summary>
    public LlamaCppDumpResult? Engine { get; init; }

    /// <summary>The GGUF's weights (`judge --gguf`): their types, and where they are lossy the reference that ran them.</summary>
    public GgufWeights? Weights { get; init; }

    /// <summary>The first divergent record: the prompt's first, else the decode steps' first (step, module, rank).</summary>
    public LayerRow? FirstDivergence => Layers.FirstDivergence ?? Steps?.FirstDivergence;
}

/// <summary>
/// `harness judge --dump DIR --model HF_DIR`: a module-by-module dump in the harness format (docs/dump-format.md, written
/// by harness_dump.py in any PyTorch engine) judged against HF transformers on the same checkpoint and the same input
/// ids (saved in the dump). Each rank's records become <see cref="ActivationCapture"/> records with their placement as a
/// <see cref="ShardSpec"/> (a shard is compared with its slice of HF's tensor, rank by rank; partial sums are summed over
/// the ranks first), and <see cref="LayerComparison"/> judges them with the float64 oracle verdict, naming the first
/// divergent module and rank. Every call of a module is judged (a module a rank recorded twice in one step: both records,
/// "call 1" and "call 2", each against HF's output of the module), as `harness run` judges every record the engine makes,
/// so `judge --dump` of `harness dump` gives `run`'s verdicts row for row. A rank that failed inside a module (recorded in
/// its index) is reported with that module.
/// Step 0 (the prompt's forward) is judged as `run` judges the prefill; every later step (a decode step, one token fed:
/// the index's inputs["s"].input_ids) is judged as `run` judges decode steps (<see cref="DecodeSteps"/>, the bound
/// <see cref="OracleBound.ForDecodeStep"/>): HF generates teacher-forced on the dump's own tokens through the worker's one
/// decode loop (<see cref="ReferenceClient.Generate"/> with forced tokens), capturing the dump's modules at every step
/// with the float64 oracle fed the same tokens, and the first divergent (step, module, rank) is named. A folder holding
/// transformers' model debugger output instead (<see cref="ModelDebuggerDump"/>) is read as rank 0's dump.
/// </summary>
public static class DumpJudge
{
    public const string Format = "harness-dump/1";

    private sealed record Entry(string Module, int Step, int Call, int Rank, int WorldSize, string Tensor, string Kind, int? Dim, JsonObject Placement);

    /// <summary>Judges the dump; HF computes in <paramref name="dtype"/>, by default the dump's own (the index's
    /// engine.dtype, which `harness dump` writes), else float32. <paramref name="engineWeights"/>: HF's checkpoint holding
    /// the engine's own rounded weights (a lossy GGUF's, dequantized: <see cref="GgufWeights"/>): the reference runs it,
    /// the float64 oracle runs <paramref name="modelDirectory"/>'s original weights, and every module is judged by
    /// <see cref="OracleBound.Quantized"/> (decode steps by <see cref="OracleBound.QuantizedDecodeStep"/>).</summary>
    public static DumpVerdict Run(string dumpDirectory, string modelDirectory, ReferenceClient client, DType? dtype = null, string? engineWeights = null)
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
                var verdict = Run(converted, modelDirectory, client, dtype, engineWeights);
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
        var fedTokens = new Dictionary<int, long>();                        // decode step -> the token it was fed (rank 0's)
        int? world = null;
        try
        {
            foreach (var path in indexes)
            {
                JsonObject index;
                try
                {
                    index = JsonNode.Parse(InputFiles.ReadCapped(path, InputFiles.ReportMaxBytes, "dump index")) as JsonObject ?? throw new InputException(path, "is not a JSON object");
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
                    foreach (var (key, node) in index["inputs"] as JsonObject ?? [])
                    {
                        if (key == "0") continue;
                        if (!int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int step) || step < 1)
                            throw new InputException(path, $"inputs has a key '{key}': steps are 0 (the prompt), 1, 2, ...");
                        if (node?["input_ids"] is not JsonValue fedNode)
                            throw new InputException(path, $"inputs[\"{key}\"] has no input_ids: a decode step is judged fed the token the engine was fed");
                        var t = files[rank].ReadTensor((string)fedNode!);
                        if (t.DType.IsFloatingPoint() || t.ToInt64Array().Length != 1)
                            throw new InputException(path, $"inputs[\"{key}\"].input_ids is {t.DType.TorchName()} {Shape.Format(t.Shape)}: a decode step is fed one token id ([1, 1])");
                        fedTokens[step] = t.ToInt64Array()[0];
                    }
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

            // Decode steps 1..last: each fed one token (rank 0's inputs), checked before any reference work.
            // Every call of a module, as `harness run` judges every record an engine makes of it (LayerComparison: each
            // against HF's output of the module, labelled "call n" when a rank recorded it more than once).
            var decode = entries.Where(e => e.Step > 0).OrderBy(e => e.Rank).ThenBy(e => e.Step).ThenBy(e => e.Call).ToList();
            long[] fed = decode.Count == 0 ? [] : Enumerable.Range(1, decode.Max(e => e.Step)).Select(s => fedTokens.TryGetValue(s, out long t) ? t
                : throw new InputException(Path.Combine(dir, "rank-0.json"), string.Create(CultureInfo.InvariantCulture,
                    $"inputs[\"{s}\"].input_ids is missing: step {s}'s module outputs are judged against HF fed the token the engine was fed there"))).ToArray();

            // Forward order: rank 0's order of first appearance at step 0.
            var step0 = entries.Where(e => e.Step == 0).OrderBy(e => e.Rank).ThenBy(e => e.Call).ToList();
            var order = step0.OrderBy(e => e.Rank).Select(e => e.Module).Distinct(StringComparer.Ordinal).ToList();
            // A module a rank failed in recorded nothing: it follows the last recorded one, so HF's output of it is the
            // first row the dump lacks (Missing, a failure) and the first divergence names it.
            foreach (var m in failedModules.Where(m => !order.Contains(m, StringComparer.Ordinal)).Distinct(StringComparer.Ordinal)) order.Add(m);
            // HF on the same ids, capturing the same modules, with the float64 oracle: a family with reference ops of its own
            // (Gemma3n, Gemma4, Qwen2-VL) through its checkpoint scenario's reference, as `compare` computes it; any other
            // checkpoint (Llama and every AutoModelForCausalLM) through the worker's forward and its one decode loop.
            // With the engine's rounded weights: the reference is HF on them, the oracle HF's original in float64.
            var shared = client.ShareDirectory(Path.GetFullPath(engineWeights ?? modelDirectory));
            string? oracleWeights = engineWeights is null ? null : client.ShareDirectory(Path.GetFullPath(modelDirectory));
            client.Oracle = true;
            var family = CompareCommand.PeekModelType(Path.Combine(Path.GetFullPath(modelDirectory), "config.json")) is { } modelType
                ? ModelFamilies.ForModelType(modelType) : null;
            IReadOnlyDictionary<string, Tensor> reference;
            if (family is { ReferenceExtension: not null })
                reference = engineWeights is not null
                    ? throw new InputException(dir, $"{family.Title} dumps are judged with the checkpoint's own weights (a reference with an engine's rounded weights is for causal LMs judged through the worker's forward)")
                    : FamilyReference(family, Path.GetFullPath(modelDirectory), dtype ?? DType.Float32, inputIds, inputName, fed, client, dir);
            else
                reference = client.Forward(shared, dtype ?? DType.Float32, inputIds, order, oracleWeights).Captured;
            var capture = new ActivationCapture();
            Fill(capture, step0, e => e.Module, reference);
            void Fill(ActivationCapture into, IEnumerable<Entry> recorded, Func<Entry, string> nameOf, IReadOnlyDictionary<string, Tensor>? reference)
            {
            foreach (var group in recorded.GroupBy(nameOf, StringComparer.Ordinal))
            {
                foreach (var partial in group.Where(e => e.Kind == "partial").GroupBy(e => e.Call).OrderBy(c => c.Key))
                {
                    // partial sums: the whole tensor (of this call) is their sum over the ranks
                    var parts = partial.ToList();
                    Tensor sum = ToFloat(files[parts[0].Rank].ReadTensor(parts[0].Tensor));
                    foreach (var e in parts.Skip(1)) sum = Engine.Ops.Elementwise.Add(sum, ToFloat(files[e.Rank].ReadTensor(e.Tensor)));
                    into.Record(group.Key, sum, ShardSpec.Whole, rank: 0);
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
                        "replicate" => LastRows(value, reference?.GetValueOrDefault(group.Key)) ?? ShardSpec.Whole,
                        _ => throw new InputException(dir, $"{e.Module} (rank {e.Rank}) has placement kind '{e.Kind}' (replicate, shard, rows or partial)"),
                    };
                    into.Record(group.Key, value, shard, rank: e.Rank);
                }
            }
            }

            Func<CapturedActivation, OracleBound>? prefillBound = engineWeights is null ? null : _ => OracleBound.Quantized;
            Func<DType, OracleBound>? stepBound = engineWeights is null ? null : _ => OracleBound.QuantizedDecodeStep;
            var layers = LayerComparison.Run(LayerComparison.Select(reference, order), capture, order, oracleBound: prefillBound);

            // Decode steps: HF teacher-forced on the dump's tokens (decode step s fed the token the engine was fed there),
            // each module at each step judged as `run` judges its decode steps.
            LayerReport? steps = null;
            if (decode.Count > 0)
            {
                int last = fed.Length;
                var stepModules = decode.OrderBy(e => e.Rank).ThenBy(e => e.Step).Select(e => e.Module).Distinct(StringComparer.Ordinal).ToList();
                var stepCapture = new ActivationCapture();
                Fill(stepCapture, decode, e => DecodeSteps.Name(e.Step, e.Module), null);
                var stepReference = family is { ReferenceExtension: not null } ? reference
                    : client.Generate(shared, dtype ?? DType.Float32, inputIds, last + 1, 1, stepModules, forced: fed, oracleModelHostDirectory: oracleWeights).StepCaptures;
                steps = DecodeSteps.Judge(stepReference, stepCapture, last + 1, stepModules, oracleBound: stepBound);
            }

            var first = layers.FirstDivergence ?? steps?.FirstDivergence;
            int judged = layers.Rows.Concat(steps?.Rows ?? []).Count(r => r.Verdict == LayerVerdict.Pass);
            string reason = errors.Count > 0 ? string.Join("; ", errors)
                : first is null ? string.Create(CultureInfo.InvariantCulture, $"{judged} module records within the oracle verdict") +
                                  (steps is null ? "" : string.Create(CultureInfo.InvariantCulture, $" (the prompt and {fed.Length} decode step(s))"))
                : $"{first.Label}: {ModuleRecord.VerdictOf(first.Verdict)}: {(first.Result?.Oracle?.ToString().Trim() ?? first.Note)}";
            var record = new ScenarioRecord(
                Id: $"judge/dump/{Path.GetFileName(dir.TrimEnd('/'))}",
                Model: Path.GetFileName(Path.GetFullPath(modelDirectory).TrimEnd('/')),
                Layout: string.Create(CultureInfo.InvariantCulture, $"dump, {world} rank(s)"),
                Dtype: Scenario.DTypeTag(dtype ?? DType.Float32),
                Input: (inputName == "input_ids" ? $"input_ids [{string.Join(",", inputIds.ToInt64Array())}]" : $"inputs_embeds {Shape.Format(inputIds.Shape)}") +
                       (fed.Length == 0 ? "" : $", decode steps fed [{string.Join(",", fed)}]"),
                Fault: null,
                ExpectFailure: false,
                Passed: errors.Count == 0 && layers.Passed && (steps?.Passed ?? true),
                Reason: TokenRecord.OneLine(reason),
                ElapsedSeconds: 0,
                EngineError: errors.Count == 0 ? null : TokenRecord.OneLine(string.Join("; ", errors)),
                FirstBadModule: first?.Module,
                Modules: layers.Rows.Concat(steps?.Rows ?? []).Select(ModuleRecord.From).ToArray(),
                Tokens: null)
            {
                StepsJudged = steps is not null,
                FirstDivergentStep = steps?.FirstDivergence is { } ds ? new StepDivergence(ds.Step, ds.StepModule, ds.Rank) : null,
            };
            return new DumpVerdict(layers, errors, record) { Steps = steps };
        }
        finally
        {
            foreach (var f in files.Values) f.Dispose();
        }
    }

    /// <summary>
    /// The reference of a family with reference ops of its own: its checkpoint scenario's (<see cref="ModelFamily.CheckpointScenario"/>)
    /// <see cref="Scenario.ComputeReference"/> on the dump's prompt ids, the prompt's module captures and every decode
    /// step's with the float64 oracle, as `compare` computes them, its decode teacher-forced on the dump's fed tokens
    /// (<see cref="Scenario.ForcedTokens"/>: the family's op runs the worker's one decode loop with them). A dump with more
    /// decode steps than the family's scenario decodes is refused naming the count.
    /// </summary>
    private static IReadOnlyDictionary<string, Tensor> FamilyReference(ModelFamily family, string modelDirectory, DType dtype, Tensor prompt,
        string inputName, long[] fed, ReferenceClient client, string dumpDirectory)
    {
        var index = Path.Combine(dumpDirectory, "rank-0.json");
        if (inputName != "input_ids")
            throw new InputException(index, $"the prompt is {inputName}: {family.Title} dumps are judged on prompt token ids (inputs[\"0\"].input_ids)");
        var scenario = family.CheckpointScenario(modelDirectory, dtype, prompt.ToInt64Array());
        scenario = scenario with
        {
            JudgeSteps = fed.Length > 0, ForcedTokens = fed.Length > 0 ? fed : null,
            ReferenceKey = $"{scenario.ReferenceKey}/forced={string.Join(",", fed)}",
        };
        using var context = ScenarioContext.Live(client);
        var bundle = scenario.ComputeReference(context);
        int decoded = bundle.Tokens?.Length ?? 0;
        if (fed.Length > Math.Max(0, decoded - 1))
            throw new InputException(index, string.Create(CultureInfo.InvariantCulture,
                $"{fed.Length} decode steps: the {family.Title} reference (its compare scenario) decodes {decoded} tokens, {Math.Max(0, decoded - 1)} decode steps"));
        return bundle.Tensors;
    }

    /// <summary>
    /// A whole prompt-forward output holding fewer token rows than HF's, all else equal ([1, n, V] against [1, T, V], n &lt; T):
    /// the engine computed the last n positions only (the logits of generate(), whose prompt forward keeps the last
    /// position: transformers' logits_to_keep), judged against HF's last n rows; null for any other shape.
    /// </summary>
    private static ShardSpec? LastRows(Tensor value, Tensor? reference)
    {
        if (reference is null || value.Shape.Length < 2 || value.Shape.Length != reference.Shape.Length) return null;
        int dim = value.Shape.Length - 2, n = value.Shape[dim], t = reference.Shape[dim];
        for (int i = 0; i < value.Shape.Length; i++)
            if (i != dim && value.Shape[i] != reference.Shape[i]) return null;
        return n < t ? new ShardSpec.Rows(t - n, n, dim) : null;
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
        if (v.Steps is { } steps) sb.Append('\n').Append(DecodeSteps.Grid(steps, "the dump's fed tokens"));   // the reference fed what the other engine was fed
        if (v.Tokens is { } tokens) sb.Append('\n').Append(tokens);
        return sb.ToString();
    }
}
