using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Judge;

/// <summary>
/// The C# engine's own module outputs in the dump format (docs/dump-format.md), so `harness judge --dump` judges our
/// engine through the same path as a foreign one. A sink (<see cref="Scenarios.ScenarioContext.Tap"/>) that hears every
/// record a scenario's engine makes, per world rank and decode step, with its <see cref="ShardSpec"/>: whole tensors are
/// "replicate", TP shards "shard" (with the shard's index and count, which differ from the world rank under PP), SP
/// token slices "rows". <see cref="Write"/> writes one rank-R.safetensors + rank-R.json per world rank.
/// </summary>
public sealed class EngineDump : IActivationSink
{
    private sealed record Item(string Module, int Rank, int Step, Tensor Value, ShardSpec Shard, long Sequence);

    private readonly object _gate = new();
    private readonly List<Item> _items = [];
    private long _sequence;

    public int Count
    {
        get { lock (_gate) return _items.Count; }
    }

    /// <summary>The highest world rank that recorded something (0 when none did).</summary>
    public int HighestRank
    {
        get { lock (_gate) return _items.Count == 0 ? 0 : _items.Max(i => i.Rank); }
    }

    public bool Wants(string module) => true;

    public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Record(module, worldRank, value, shard, 0);

    public bool Wants(string module, int step) => true;

    public void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step)
    {
        var snapshot = value.Clone();                                     // engines reuse buffers
        lock (_gate) _items.Add(new Item(module, worldRank, step, snapshot, shard, _sequence++));
    }

    /// <summary>The placement object of the format for a shard spec, as rank <paramref name="rank"/> of
    /// <paramref name="worldSize"/> holds it.</summary>
    public static JsonObject Placement(ShardSpec shard, int rank, int worldSize) => shard switch
    {
        ShardSpec.Sharded s when s.Rank == rank && s.WorldSize == worldSize => new JsonObject { ["kind"] = "shard", ["dim"] = s.Dim, ["source"] = "engine" },
        ShardSpec.Sharded s => new JsonObject { ["kind"] = "shard", ["dim"] = s.Dim, ["index"] = s.Rank, ["of"] = s.WorldSize, ["source"] = "engine" },
        ShardSpec.Rows r => new JsonObject { ["kind"] = "rows", ["dim"] = r.Dim, ["start"] = r.Start, ["count"] = r.Count, ["source"] = "engine" },
        _ => new JsonObject { ["kind"] = "replicate", ["source"] = "engine" },
    };

    /// <summary>
    /// Writes the dump: per world rank its records (call 0, 1, ... in arrival order per module and step), the inputs
    /// (step 0's, each [1, ...]: input_ids or inputs_embeds; each decode step s recorded, the token it was fed,
    /// <paramref name="fedTokens"/>[s - 1], as input_ids [1, 1]), the run's failure (on every rank: engine failures are the
    /// world's), and <paramref name="engine"/> (what ran) in each index. Ranks that recorded nothing still get a file.
    /// </summary>
    public void Write(string directory, int worldSize, IReadOnlyDictionary<string, Tensor> inputs, string? failedModule, string? error, JsonObject engine,
        IReadOnlyList<long>? fedTokens = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(engine);
        Directory.CreateDirectory(directory);
        List<Item> items;
        lock (_gate) items = _items.OrderBy(i => i.Sequence).ToList();
        var outside = items.Where(i => i.Rank < 0 || i.Rank >= worldSize).Select(i => i.Rank).Distinct().ToList();
        if (outside.Count > 0) throw new InvalidOperationException($"records from rank(s) {string.Join(", ", outside)} outside a world of {worldSize}");
        int lastStep = items.Count == 0 ? 0 : items.Max(i => i.Step);
        if (lastStep > (fedTokens?.Count ?? 0))
            throw new InvalidOperationException($"records of decode step {lastStep} but {fedTokens?.Count ?? 0} fed tokens: the judge feeds HF the engine's tokens");
        for (int rank = 0; rank < worldSize; rank++)
        {
            var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var inputIndex = new JsonObject();
            foreach (var (name, value) in inputs)
            {
                var key = $"input/{name}/step0";
                tensors[key] = value.Unsqueeze(0).Contiguous();             // [1, T] / [1, T, hidden], as HF takes them
                inputIndex[name] = key;
            }
            var stepInputs = new JsonObject { ["0"] = inputIndex };
            for (int step = 1; step <= lastStep; step++)
            {
                var key = string.Create(CultureInfo.InvariantCulture, $"input/input_ids/step{step}");
                tensors[key] = Tensor.FromArray([fedTokens![step - 1]], 1, 1);   // [1, 1]: the one token decode step s is fed
                stepInputs[step.ToString(CultureInfo.InvariantCulture)] = new JsonObject { ["input_ids"] = key };
            }
            var entries = new JsonArray();
            var calls = new Dictionary<(string, int), int>();
            foreach (var item in items.Where(i => i.Rank == rank))
            {
                int call = calls.GetValueOrDefault((item.Module, item.Step));
                calls[(item.Module, item.Step)] = call + 1;
                var key = string.Create(CultureInfo.InvariantCulture, $"{item.Module}/step{item.Step}/call{call}");
                tensors[key] = item.Value;
                entries.Add(new JsonObject
                {
                    ["module"] = item.Module, ["step"] = item.Step, ["call"] = call, ["tensor"] = key,
                    ["shape"] = new JsonArray(item.Value.ShapeArray.Select(d => (JsonNode)d).ToArray()),
                    ["dtype"] = item.Value.DType.TorchName(), ["placement"] = Placement(item.Shard, rank, worldSize),
                });
            }
            var errors = new JsonArray();
            if (error is not null)
                errors.Add(new JsonObject { ["step"] = 0, ["module"] = failedModule, ["type"] = "EngineError", ["message"] = error.Split('\n')[0] });
            var basePath = Path.Combine(directory, string.Create(CultureInfo.InvariantCulture, $"rank-{rank}"));
            SafetensorsWriter.Save(basePath + ".safetensors", tensors);
            var index = new JsonObject
            {
                ["format"] = DumpJudge.Format, ["rank"] = rank, ["world_size"] = worldSize,
                ["tensors_file"] = Path.GetFileName(basePath) + ".safetensors",
                ["inputs"] = stepInputs,
                ["entries"] = entries, ["errors"] = errors, ["engine"] = engine.DeepClone(),
            };
            AtomicFile.WriteAllBytes(basePath + ".json", JsonSerializer.SerializeToUtf8Bytes(index, new JsonSerializerOptions { WriteIndented = true }));
        }
    }

    /// <summary>What <see cref="Run"/> wrote: the folder, the HF model folder to judge against, the run's own result.</summary>
    public sealed record Written(string Directory, string ModelDirectory, ScenarioResult Result, int Records, int WorldSize)
    {
        public string Summary
        {
            get
            {
                var verdict = Result.Layers.Passed && Result.EngineError is null ? "PASS" : "FAIL";
                var first = Result.Layers.FirstDivergence is { } f ? $" (first divergent module {f.Label})" : "";
                var error = Result.EngineError is { } e ? $"; engine error: {e.Split('\n')[0]}" : "";
                if (Result.Steps is { } steps)
                    error += steps.FirstDivergence is { } d
                        ? string.Create(CultureInfo.InvariantCulture, $"; decode steps: FAIL (first divergent (step, module, rank): ({d.Step}, {d.StepModule}, {d.Rank}))")
                        : "; decode steps: PASS";
                return string.Create(CultureInfo.InvariantCulture, $"{Result.Scenario.Id}: {Records} module records from {WorldSize} rank(s) in {Directory}") +
                    $"\nthe run's own layer comparison: {verdict}{first}{error}\njudge it: harness judge --dump {Directory} --model {ModelDirectory}";
            }
        }
    }

    /// <summary>The HF checkpoint folder a family's checkpoint scenario (`compare --model`, `dump --model`) runs; null for a tiny catalog model.</summary>
    private static string? CheckpointOf(Scenario scenario) => scenario switch
    {
        LlamaScenario s => s.ModelPath,
        Gemma3nScenario s => s.ModelPath,
        Gemma4Scenario s => s.ModelPath,
        Qwen2VlScenario s => s.ModelPath,
        _ => null,
    };

    /// <summary>
    /// Runs the scenario as `harness run` does with an <see cref="EngineDump"/> on the context's tap and writes the dump.
    /// The HF model the scenario ran: its checkpoint folder, or the built (or recorded) tiny model copied to DIR/model.
    /// </summary>
    public static Written Run(Scenario scenario, ScenarioContext context, string outDirectory)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        ArgumentNullException.ThrowIfNull(context);
        var dir = Path.GetFullPath(outDirectory);
        var tap = new EngineDump();
        var outcome = ScenarioRunner.Run(scenario, context.WithTap(tap));
        var result = outcome.Result;
        int world = scenario is LlamaScenario l ? l.WorldSize : tap.HighestRank + 1;
        var engine = new JsonObject
        {
            ["name"] = "harness", ["scenario"] = scenario.Id, ["model"] = scenario.Model, ["layout"] = scenario.Layout,
            ["dtype"] = scenario.DType.TorchName(), ["fault"] = scenario.Fault, ["device"] = scenario.Device,
        };
        // decode steps are the engine's forced run on the reference's tokens: step s was fed the reference's token s - 1
        tap.Write(dir, world, scenario.Inputs(context), result.FailedModule, result.EngineError, engine, result.ReferenceTokens?.Tokens);

        string modelDir;
        if (CheckpointOf(scenario) is { } checkpoint) modelDir = checkpoint;
        else
        {
            var built = context.BuiltModels().Select(m => m.Directory).ToList();   // built live, or the recorded one offline
            if (built.Count != 1)
                throw new InputException(scenario.Id, $"cannot tell which HF model folder the scenario ran ({built.Count} candidates); judge it with --model on your copy");
            modelDir = Path.Combine(dir, "model");
            Directory.CreateDirectory(modelDir);
            foreach (var file in Directory.GetFiles(built[0]))
                File.Copy(file, Path.Combine(modelDir, Path.GetFileName(file)), overwrite: true);
        }
        // readable by anyone: the judge's worker may run as another user (the sandbox's nobody)
        if (!OperatingSystem.IsWindows())
            foreach (var file in Directory.GetFiles(dir, "*", SearchOption.AllDirectories))
                File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        return new Written(dir, modelDir, result, tap.Count, world);
    }
}
