using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Every config.json field the engine reads is observable: given to the engine at HF's default (or perturbed where the
/// true value is the default) while the reference keeps the true config, some catalog scenario fails. What
/// `harness run --config-mutations` prints, run over the whole catalog; a MISSED or ABSENT field fails the build.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public class ConfigMutationTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void Every_config_field_the_engine_reads_is_caught_when_it_is_changed()
    {
        var rows = ConfigMutations.Run(ScenarioCatalog.All, CatalogContexts.Live());
        output.WriteLine(ConfigMutations.Format(rows));
        Assert.NotEmpty(rows);
        Assert.True(rows.All(r => !r.Missed), "fields missed or absent:\n" + ConfigMutations.Format(rows.Where(r => r.Missed).ToList()));
    }

    [SkippableFact]
    public void An_engine_that_ignores_a_field_is_reported_as_missing_it()
    {
        // The bug this check exists for: an engine that reads rms_norm_eps but computes with a constant of its own passes
        // every comparison on a model whose eps happens to be that constant. Re-created here: the engine's view of every
        // model folder has rms_norm_eps put back to the true value, whatever the check gave it.
        var llama = ScenarioCatalog.Find("llama/tp1/input-ids/fp32")!;
        var honest = ConfigMutations.Run([llama], CatalogContexts.Live());
        Assert.Contains(honest, r => r.Field == "rms_norm_eps" && !r.Missed);

        var ignoring = ConfigMutations.Run([new FieldIgnoringScenario(llama, "rms_norm_eps")], CatalogContexts.Live());
        output.WriteLine(ConfigMutations.Format(ignoring));
        var row = Assert.Single(ignoring, r => r.Field == "rms_norm_eps");
        Assert.True(row.Missed, row.ToString());
        Assert.Equal("MISSED", row.Status);
    }

    /// <summary>A scenario whose engine never sees one config field change: it reads the true value from the model folder.</summary>
    private sealed record FieldIgnoringScenario : Scenario
    {
        private readonly Scenario _inner;
        private readonly string _field;

        [System.Diagnostics.CodeAnalysis.SetsRequiredMembers]
        public FieldIgnoringScenario(Scenario inner, string field)
        {
            _inner = inner; _field = field;
            Id = inner.Id; Model = inner.Model; Layout = inner.Layout; DType = inner.DType; Input = inner.Input;
            Description = inner.Description; Tolerance = inner.Tolerance; ReferenceKey = inner.ReferenceKey;
        }

        public override IReadOnlyDictionary<string, Engine.Tensors.Tensor> Inputs(ScenarioContext context) => _inner.Inputs(context);
        public override IReadOnlyDictionary<string, string> Manifest() => _inner.Manifest();
        public override ReferenceBundle ComputeReference(ScenarioContext context) => _inner.ComputeReference(context);

        public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
        {
            var view = context.WithConfigMutation(dir =>
            {
                var given = context.EngineDirectory(dir);
                if (given == dir) return dir;                           // no mutation: the true folder already
                var path = Path.Combine(given, "config.json");          // the check's scratch copy: put the field back in place
                var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
                config[_field] = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))![_field]?.DeepClone();
                File.WriteAllText(path, config.ToJsonString());
                return given;
            });
            return _inner.RunEngine(view, reference);
        }
    }
}
