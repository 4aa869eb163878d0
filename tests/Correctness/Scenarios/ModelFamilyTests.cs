using System.Text.Json.Nodes;
using Harness.Commands;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Issue 20 item 3: a model family registers once (<see cref="ModelFamilies"/>), and the catalog, `compare --model`, `run
/// --device cuda` and the fault map agree with the registry. README "Adding a model family" names what these tests hold.
/// </summary>
public sealed class ModelFamilyTests
{
    public static TheoryData<string> Families()
    {
        var data = new TheoryData<string>();
        foreach (var f in ModelFamilies.All) data.Add(f.Name);
        return data;
    }

    private static string Root => Path.GetDirectoryName(Fixtures.DefaultDirectory())!;

    [Fact]
    public void The_registry_the_catalog_and_compare_agree()
    {
        var catalog = ScenarioCatalog.All;
        // every catalog scenario is a registered family's (or an op-level matmul shape), in exactly one family
        foreach (var s in catalog)
        {
            int owners = ModelFamilies.All.Count(f => f.Owns(s));
            Assert.True(owners == 1 || (owners == 0 && s is MatmulScenario), $"{s.Id} belongs to {owners} registered families");
        }
        foreach (var family in ModelFamilies.All)
        {
            var ids = family.Scenarios().Select(s => s.Id).ToList();
            Assert.NotEmpty(ids);
            Assert.All(ids, id => Assert.Contains(catalog, s => s.Id == id));
            Assert.All(family.Scenarios(), s => Assert.True(family.Owns(s), $"{s.Id}: a {s.GetType().Name} is not among {family.Name}'s scenario types"));
            // compare takes its model_types, and its help names it with its layouts
            Assert.All(family.Contract.ModelTypes, t => Assert.Contains(t, CompareCommand.Supported));
            var compare = CompareCommand.Create();
            Assert.Contains($"{family.Title} with {family.CompareLayouts}", compare.Description);
            var modelHelp = compare.Options.Single(o => o.Name == "--model").Description!;
            Assert.All(family.Contract.ModelTypes, t => Assert.Contains(t, modelHelp));
            // the reference extension it names is a worker extension
            if (family.ReferenceExtension is { } ext)
                Assert.True(File.Exists(Path.Combine(Root, "src", "Reference", "python", "ext", ext + ".py")), $"{family.Name}: no ext/{ext}.py");
            // run --device cuda finds every one of its scenarios a device path
            Assert.All(family.Scenarios(), s => Assert.NotNull(CudaScenarios.OnDevice(s, "cuda")));
        }
        Assert.Equal(ModelFamilies.All.SelectMany(f => f.Contract.ModelTypes).Order(), CompareCommand.Supported.Order());
        Assert.Equal(ModelFamilies.All.Count, ModelFamilies.All.Select(f => f.Name).Distinct().Count());
    }

    [Fact]
    public void The_fault_map_names_registered_families_and_every_catalog_fault_has_a_site_in_its_family()
    {
        var names = ModelFamilies.All.Select(f => f.Name).Append("ops").ToHashSet();
        Assert.All(FaultMap.Sites, s => Assert.Contains(s.Family, names));
        Assert.All(FaultMap.Sites, s => Assert.True(Faults.Known.ContainsKey(s.Fault), s.Fault));
        Assert.All(Faults.Known.Keys, f => Assert.Contains(FaultMap.Sites, s => s.Fault == f));
        foreach (var s in ScenarioCatalog.All.Where(s => s.Fault is not null))
        {
            string family = ModelFamilies.Of(s)?.Name ?? "ops";
            Assert.True(FaultMap.Of(family).Any(site => site.Fault == s.Fault), $"{s.Id}: {family} has no site for {s.Fault}");
            Assert.NotEqual(FaultPlan.None, FaultMap.Plan(s.Fault, family));
        }
        // a fault a family has no site for plants nothing there (run --fault over the whole catalog)
        Assert.Same(FaultPlan.None, FaultMap.Plan(Faults.GeluTanhAsExact, "llama"));
        Assert.Throws<ArgumentException>(() => FaultMap.Plan("no-such-fault", "llama"));
    }

    /// <summary>
    /// Every family implements the model contract: its tiny models (the recorded fixtures) carry a model_type it loads, hold
    /// exactly the tensors its ExpectedTensors declares for their config, and its factory builds the model from them.
    /// </summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Every_tiny_model_of_a_family_fits_its_contract_and_builds(string name)
    {
        var family = ModelFamilies.Named(name);
        var tiny = family.TinyConfigs();
        Assert.NotEmpty(tiny);
        int built = 0;
        foreach (var (model, config) in tiny)
        {
            var dir = Path.Combine(Fixtures.DefaultDirectory(), "models", model + "-fp32");
            Assert.True(Directory.Exists(dir), $"{name}: no recorded tiny model {dir}");
            var hf = HfConfig.Load(Path.Combine(dir, "config.json"));
            Assert.Contains(hf.ModelType!, family.Contract.ModelTypes);
            Assert.Equal((string?)config["model_type"], hf.ModelType);
            if (model == TinyGemma4Towers.ModelName) continue;     // the towers' own model: no text decoder weights
            CheckpointValidator.Validate(dir, family.Contract.ExpectedTensors(hf));
            var models = ThreadWorld.Run(1, rank =>
            {
                using var checkpoint = Checkpoint.Open(dir);
                return family.Contract.Build(new CheckpointWeights(checkpoint), hf, ThreadWorld.Layout(rank, 1, 1), FaultPlan.None);
            }, TimeSpan.FromSeconds(60));
            Assert.Equal(family.Contract.Model, models[0].GetType().Name);
            built++;
        }
        Assert.True(built > 0);
    }

    /// <summary>
    /// Qwen2-VL's declaration (new with the contract) names a missing tensor in either checkpoint layout: the released one
    /// (model.layers.*, visual.*) and the module paths (model.language_model.*, model.visual.*), as Qwen2VlWeights reads both.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Qwen2Vl_declares_its_tensors_in_both_checkpoint_layouts(bool modulePaths)
    {
        var src = Path.Combine(Fixtures.DefaultDirectory(), "models", TinyQwen2Vl.ModelName + "-fp32");
        using var tmp = new TempDir();
        var tensors = new Dictionary<string, Tensor>();
        using (var checkpoint = Checkpoint.Open(src))
            foreach (var n in checkpoint.Names)
                tensors[modulePaths ? n.StartsWith("visual.", StringComparison.Ordinal) ? "model." + n : n.StartsWith("model.", StringComparison.Ordinal) ? "model.language_model." + n[6..] : n : n] =
                    checkpoint.GetTensor(n);
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(tmp.Path, "config.json"));
        var hf = HfConfig.Load(Path.Combine(tmp.Path, "config.json"));
        var expected = Harness.Engine.Models.Qwen2Vl.Qwen2VlForConditionalGeneration.ExpectedTensors(hf);

        SafetensorsWriter.Save(Path.Combine(tmp.Path, "model.safetensors"), tensors);
        CheckpointValidator.Validate(tmp.Path, expected);                      // the whole model fits

        string dropped = modulePaths ? "model.visual.merger.mlp.2.bias" : "visual.merger.mlp.2.bias";
        tensors.Remove(dropped);
        SafetensorsWriter.Save(Path.Combine(tmp.Path, "model.safetensors"), tensors);
        var e = Assert.Throws<CheckpointMismatchException>(() => CheckpointValidator.Validate(tmp.Path, expected));
        Assert.Contains("'model.visual.merger.mlp.2.bias' [64] is missing", e.Message);
    }

    private static CompareCommand.Options Compare(string fault, int tp = 1, int pp = 1, bool sp = false) =>
        new("dir", tp, pp, sp, "fp32", null, null) { Fault = fault };

    /// <summary>`compare --fault`: planted where the family's compare model has a site and the layout can show it; else one line why.</summary>
    [Fact]
    public void Compare_fault_is_planted_only_where_the_family_compare_has_a_site()
    {
        var llama = ModelFamilies.Named("llama");
        var gemma4 = ModelFamilies.Named("gemma4");
        var qwen = ModelFamilies.Named("qwen2-vl");
        Assert.Null(CompareCommand.FaultProblem(llama, Compare(Faults.ResidualScaleOff)));
        Assert.Null(CompareCommand.FaultProblem(llama, Compare(Faults.RopeThetaDefault)));
        Assert.Null(CompareCommand.FaultProblem(llama, Compare(Faults.SpResidualFirstSlice, tp: 2, sp: true)));
        Assert.Null(CompareCommand.FaultProblem(gemma4, Compare(Faults.GeluTanhAsExact)));
        Assert.Null(CompareCommand.FaultProblem(qwen, Compare(Faults.AttentionReshapeHiddenSize, tp: 4)));

        Assert.Equal("Llama has no site for it; faults compare plants in Llama: sp-residual-first-slice, sp-pp-residual-sliced, " +
                     "rms-norm-sum-of-squares-bf16, residual-scale-off, rope-scaling-ignored, rope-theta-default, rms-norm-eps-default, decode-position-off-by-one",
            CompareCommand.FaultProblem(llama, Compare(Faults.GeluTanhAsExact)));
        Assert.StartsWith("Gemma4 has it in Gemma4AudioModel and Gemma4VisionModel, which compare does not run (it runs Gemma4ForCausalLM)",
            CompareCommand.FaultProblem(gemma4, Compare(Faults.MatmulNoNdBroadcast)));
        Assert.Equal("acts in sequence parallelism only: it needs --sp with --tp 2 or more (got --tp 2 --pp 1)",
            CompareCommand.FaultProblem(llama, Compare(Faults.SpResidualFirstSlice, tp: 2)));
        Assert.StartsWith("acts under tensor parallelism only", CompareCommand.FaultProblem(qwen, Compare(Faults.AttentionReshapeHiddenSize)));
    }

    /// <summary>The fault reaches the scenario compare runs: the scenario's engine plan is the fault map's for its family.</summary>
    [Fact]
    public void A_compare_scenario_with_a_fault_plants_the_family_plan()
    {
        var dir = Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");
        var s = LlamaScenario.ForCheckpoint(dir, 1, 1, false, DType.Float32, null, 7);
        var faulted = s with { Fault = Faults.ResidualScaleOff, Id = Scenario.WithFault(s.Id, Faults.ResidualScaleOff) };
        Assert.False(faulted.ExpectFailure);                                  // judged as a plain comparison: where it diverges is the finding
        Assert.EndsWith("/fault=residual-scale-off", faulted.Id);
        Assert.Equal(1 + Math.ScaleB(1, -6), FaultMap.Plan(faulted.Fault, "llama").Llama.ResidualBranchScale);
    }

    /// <summary>
    /// Issue 20 item 5: each scenario built its model twice, once over the capture sink for the prompt's forward and once to
    /// decode (Llama three times, the forced run too). Now one model per rank runs both (<see cref="PrefillSink"/>); a
    /// scenario file that constructs a family's model class more than once fails here with the lines.
    /// </summary>
    [Fact]
    public void Each_scenario_builds_its_model_once()
    {
        var models = ModelFamilies.All.Select(f => f.Contract.Model).Append("Gemma4ForConditionalGeneration").ToList();
        var dir = Path.Combine(Root, "src", "Harness", "Scenarios");
        var twice = Directory.EnumerateFiles(dir, "*Scenario.cs")
            .SelectMany(f => models.Select(m => (File: Path.GetFileName(f), Model: m,
                Lines: File.ReadLines(f).Select((l, i) => (l, i + 1)).Where(x => x.l.Contains($"new {m}(", StringComparison.Ordinal)).Select(x => x.Item2).ToList())))
            .Where(x => x.Lines.Count > 1)
            .Select(x => $"{x.File} builds {x.Model} {x.Lines.Count} times (lines {string.Join(", ", x.Lines)})")
            .ToList();
        Assert.True(twice.Count == 0, string.Join("\n", twice));
    }

    private sealed class TempDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("harness-family-").FullName;
        public void Dispose() => Directory.Delete(Path, true);
    }
}
