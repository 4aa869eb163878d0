using System.Text.Json.Nodes;
using Harness.Commands;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Models;
using Harness.Engine.ParallelLayers;

namespace Harness.Scenarios;

/// <summary>
/// What a family's model class gives the registry through its contract (<see cref="ICheckpointModel"/>): the config.json
/// model_type values it loads, the tensors a config implies, its name (the <see cref="FaultMap"/> site compare plants a
/// fault in), and a factory that builds it on one rank from a checkpoint's config with a fault plan.
/// </summary>
internal sealed record ModelContract(string Model, IReadOnlyList<string> ModelTypes, Func<HfConfig, ModelTensors> ExpectedTensors,
    Func<IWeightSource, HfConfig, ParallelContext, FaultPlan, object> Build)
{
    public static ModelContract Of<TModel>(Func<IWeightSource, HfConfig, ParallelContext, FaultPlan, TModel> build)
        where TModel : class, ICheckpointModel =>
        new(typeof(TModel).Name, TModel.ModelTypes, TModel.ExpectedTensors, build);
}

/// <summary>
/// One model family as the harness knows it, registered once in <see cref="ModelFamilies.All"/>: its contract (config
/// model_types, expected tensors, factory), its reference extension, its tiny configs, its catalog scenarios, how
/// `harness compare` runs one of its checkpoints (and with which layout options), and its faults (the <see cref="FaultMap"/>
/// rows under <see cref="Name"/>). The catalog, `compare --model`, `run --device cuda` and the GPU tests read it.
/// </summary>
internal sealed record ModelFamily
{
    /// <summary>The family's name: the first part of its scenario ids and its <see cref="FaultMap"/> rows' family.</summary>
    public required string Name { get; init; }

    /// <summary>How help texts name it ("Llama", "Qwen2-VL").</summary>
    public required string Title { get; init; }

    public required ModelContract Contract { get; init; }

    /// <summary>The worker extension with the family's reference ops (src/Reference/python/ext/NAME.py); null: the worker's own ops.</summary>
    public required string? ReferenceExtension { get; init; }

    /// <summary>The tiny random models of its scenarios, by model folder name (fixtures/models/NAME-DTYPE): their HF configs.</summary>
    public required Func<IReadOnlyDictionary<string, JsonObject>> TinyConfigs { get; init; }

    /// <summary>Its catalog entries, and the scenario types they are (a scenario belongs to the family of its type).</summary>
    public required Func<IEnumerable<Scenario>> Scenarios { get; init; }
    public required IReadOnlyList<Type> ScenarioTypes { get; init; }

    /// <summary>The layout options `compare` takes for it, for the help ("--tp", "--tp, --sp", "--tp, --pp, --sp").</summary>
    public required string CompareLayouts { get; init; }

    /// <summary>
    /// `compare --model DIR` on a checkpoint of this family: its own checks (one line, exit 2), then the scenario it
    /// compares, run by <see cref="CompareCommand.Execute"/> (which plants --fault when given).
    /// </summary>
    public required Func<CompareCommand.Options, CompareCommand.Checkpoint, int> Compare { get; init; }

    /// <summary>
    /// The scenario a checkpoint of this family runs on these prompt ids at one rank (the scenario <see cref="Compare"/>
    /// builds, without its layout): `harness judge --dump` computes the family's reference through its
    /// <see cref="Scenario.ComputeReference"/>, so a dump is judged on the modules and reference ops `compare` uses.
    /// </summary>
    public required Func<string, Engine.Tensors.DType, long[], Scenario> CheckpointScenario { get; init; }

    /// <summary>
    /// The model classes besides <see cref="ModelContract.Model"/> that `compare` builds for a prompt with files (--image FILE,
    /// --audio: the multimodal model and the towers that run on them); a fault with a site in one of them can be planted then.
    /// </summary>
    public Func<CompareCommand.Options, IReadOnlyList<string>> MediaModels { get; init; } = _ => [];

    /// <summary>The faults `compare --fault` can plant in this family: the <see cref="FaultMap"/> sites in the class compare builds.</summary>
    public IReadOnlyList<FaultMap.Site> CompareFaults => FaultMap.Of(Name).Where(s => s.Model == Contract.Model).ToList();

    public bool Owns(Scenario s) => ScenarioTypes.Contains(s.GetType());
}

/// <summary>
/// Every model family the harness compares. A new family writes its files (README "Adding a model family") and adds
/// its one line here.
/// </summary>
internal static class ModelFamilies
{
    public static IReadOnlyList<ModelFamily> All { get; } =
    [
        LlamaCompare.Family,
        Gemma3nCompare.Family,
        Gemma4Compare.Family,
        Qwen2VlCompare.Family,
    ];

    /// <summary>config.json model_type values `compare` takes, in registry order.</summary>
    public static IReadOnlyList<string> ModelTypes => All.SelectMany(f => f.Contract.ModelTypes).ToList();

    public static ModelFamily? ForModelType(string modelType) => All.FirstOrDefault(f => f.Contract.ModelTypes.Contains(modelType));

    /// <summary>The family a scenario belongs to (null: an op-level scenario, the matmul shapes).</summary>
    public static ModelFamily? Of(Scenario s) => All.FirstOrDefault(f => f.Owns(s));

    public static ModelFamily Named(string name) =>
        All.FirstOrDefault(f => f.Name == name) ?? throw new ArgumentException($"no model family '{name}'; registered: {string.Join(", ", All.Select(f => f.Name))}");
}
