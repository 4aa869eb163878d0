using System.Collections.Concurrent;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// Where a scenario run gets its reference and its model weights. Live: the reference worker computes the outputs and
/// HF builds the models (cached per process). Recorded (offline tier, no Python): both come from the fixtures folder,
/// written by `harness fixtures record`.
/// </summary>
public sealed class ScenarioContext : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<string>> _models = new();
    private readonly ConcurrentDictionary<string, Lazy<ReferenceBundle>> _bundles = new();

    /// <summary>The live reference, or null offline.</summary>
    public ReferenceClient? Client { get; }

    /// <summary>The fixtures folder (fixtures/ at the repository root).</summary>
    public string FixturesDirectory { get; }

    public bool IsLive => Client is not null;

    /// <summary>Called with each module name as the engine records it (any rank thread), for progress displays.</summary>
    public Action<string>? ModuleProgress { get; set; }

    internal void ReportModule(string module) => ModuleProgress?.Invoke(module);

    /// <summary>
    /// Live references also run the float64 oracle (default). Off (`compare --no-oracle`, a model that does not fit twice in
    /// memory): modules are judged by the named fixed policies and the report says so.
    /// </summary>
    public bool Oracle { get; init; } = true;

    /// <summary>The worker's oracle mode (<see cref="ReferenceClient.OracleMode"/>): "stream" (default) or "whole".</summary>
    public string OracleMode { get; init; } = "stream";

    /// <summary>
    /// Where every engine record also goes, as the engine makes it (any rank thread, with its rank, shard and step):
    /// `harness dump` writes them in the dump format (<see cref="Judge.EngineDump"/>). Null: nowhere else.
    /// </summary>
    public Engine.Capture.IActivationSink? Tap { get; init; }

    /// <summary>The same context (models and reference bundles shared) whose engine records also go to <paramref name="tap"/>.</summary>
    public ScenarioContext WithTap(Engine.Capture.IActivationSink tap) => new(this) { Tap = tap, ConfigMutation = ConfigMutation };

    /// <summary>Timeout for one collective of the engine's ranks.</summary>
    public TimeSpan CollectiveTimeout { get; init; } = TimeSpan.FromSeconds(60);

    private ScenarioContext(ReferenceClient? client, string fixtures)
    {
        Client = client;
        FixturesDirectory = fixtures;
    }

    private ScenarioContext(ScenarioContext shared)
    {
        Client = shared.Client;
        FixturesDirectory = shared.FixturesDirectory;
        _models = shared._models;
        _bundles = shared._bundles;
        Oracle = shared.Oracle;
        OracleMode = shared.OracleMode;
        CollectiveTimeout = shared.CollectiveTimeout;
        ModuleProgress = shared.ModuleProgress;
        Tap = shared.Tap;
    }

    /// <summary>The same context (models and reference bundles shared, nothing recomputed) whose engine loads models
    /// through <paramref name="mutation"/> (<see cref="EngineDirectory"/>).</summary>
    public ScenarioContext WithConfigMutation(Func<string, string> mutation) => new(this) { ConfigMutation = mutation };

    /// <summary>The same context with the float64 oracle on or off (off: the fixed policies judge; the report says so).</summary>
    public ScenarioContext WithOracle(bool oracle) => new(this) { Oracle = oracle, ConfigMutation = ConfigMutation };

    /// <summary>The same context with the oracle computed by <paramref name="mode"/> ("stream" or "whole"), its reference
    /// bundles computed afresh (not shared: the point of a second mode is to compute them again).</summary>
    public ScenarioContext WithOracleMode(string mode) => new(Client, FixturesDirectory)
    {
        Oracle = Oracle, OracleMode = mode, ConfigMutation = ConfigMutation, CollectiveTimeout = CollectiveTimeout, ModuleProgress = ModuleProgress, Tap = Tap,
    };

    public static ScenarioContext Live(ReferenceClient client, string? fixtures = null) => new(client, fixtures ?? Fixtures.DefaultDirectory());

    public static ScenarioContext Recorded(string? fixtures = null) => new(null, fixtures ?? Fixtures.DefaultDirectory());

    /// <summary>
    /// The folder the ENGINE loads a model from (config.json and weights). Normally the model folder itself; a config-field
    /// mutation check (`harness run --config-mutations`) hands the engine a copy whose config.json has one field changed
    /// while the reference keeps the true folder. Every scenario loads the engine's config through this, never directly.
    /// </summary>
    public string EngineDirectory(string modelDirectory) => ConfigMutation is null ? modelDirectory : ConfigMutation(modelDirectory);

    /// <summary>Maps a model folder to the engine's mutated copy (null: no mutation). Set by the config-mutation runner.</summary>
    public Func<string, string>? ConfigMutation { get; init; }

    /// <summary>An HF model folder (config.json + safetensors) for a model name and dtype.</summary>
    public string ModelDirectory(string name, DType dtype, Func<ReferenceClient, string, string> build)
    {
        string key = $"{name}-{Scenario.DTypeTag(dtype)}";
        return _models.GetOrAdd(key, k => new Lazy<string>(() =>
        {
            if (Client is null)
            {
                var dir = Path.Combine(FixturesDirectory, "models", k);
                if (!File.Exists(Path.Combine(dir, "config.json")))
                    throw new FileNotFoundException($"no recorded model '{k}' in {dir}: run `harness fixtures record`", Path.Combine(dir, "config.json"));
                return dir;
            }
            return build(Client, Client.ScratchDirectory(k));
        })).Value;
    }

    /// <summary>The reference bundle of a scenario: computed live (once per key), or loaded from the fixtures.</summary>
    public ReferenceBundle Reference(Scenario scenario) => _bundles.GetOrAdd(scenario.ReferenceKey, key => new Lazy<ReferenceBundle>(() =>
    {
        if (Client is not null)
        {
            Client.Oracle = Oracle;
            Client.OracleMode = OracleMode;
            var computed = scenario.ComputeReference(this);
            var metadata = new Dictionary<string, string>(computed.Versions);
            foreach (var (k, v) in scenario.Manifest()) metadata[k] = v;
            metadata["scenarios"] = string.Join(" ", ScenarioCatalog.All.Where(s => s.ReferenceKey == key).Select(s => s.Id).DefaultIfEmpty(scenario.Id));
            return computed with { Versions = metadata, Inputs = scenario.Inputs(this) };
        }
        var path = Fixtures.BundlePath(FixturesDirectory, key);
        if (!File.Exists(path))
            throw new FileNotFoundException($"no recorded reference for '{scenario.Id}' (key {key}) at {path}: run `harness fixtures record`", path);
        return ReferenceBundle.Load(path);
    })).Value;

    /// <summary>The live-built model folders so far (name-dtype, host folder).</summary>
    public IEnumerable<(string Name, string Directory)> BuiltModels() =>
        _models.Where(kv => kv.Value.IsValueCreated).Select(kv => (kv.Key, kv.Value.Value));

    /// <summary>
    /// Removes the folders this context had the reference build (live models); a context made by <see cref="WithOracle"/>
    /// or <see cref="WithConfigMutation"/> shares them with its source, so dispose only the first. Whatever is not
    /// disposed goes at the end of the process (ScratchFolders).
    /// </summary>
    public void Dispose()
    {
        if (Client is null) return;
        foreach (var (_, dir) in BuiltModels().ToList()) Client.Release(dir);
        _models.Clear();
    }

    /// <summary>The versions of the live reference, for bundle metadata.</summary>
    public IReadOnlyDictionary<string, string> Versions()
    {
        if (Client is null) return new Dictionary<string, string> { ["source"] = "recorded" };
        var v = Client.GetVersions();
        return new Dictionary<string, string>
        {
            ["python"] = v.Python, ["torch"] = v.Torch, ["transformers"] = v.Transformers, ["device"] = v.Device,
            ["recorded_at"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
        };
    }
}
