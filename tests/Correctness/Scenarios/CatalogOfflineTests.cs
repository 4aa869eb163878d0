using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Offline tier: every catalog scenario against the reference outputs recorded in fixtures/ (and the models recorded
/// with them), with no Python at all. A missing recording fails with the command that makes it.
/// </summary>
[Collection(SerialCollection.Name)]
public class CatalogOfflineTests(ITestOutputHelper output)
{
    public static TheoryData<string> Scenarios => CatalogContexts.Ids();

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void Scenario_against_the_recorded_reference(string id)
    {
        var outcome = ScenarioRunner.Run(ScenarioCatalog.Find(id)!, CatalogContexts.Recorded);
        output.WriteLine(outcome.Result.Describe());
        Assert.True(outcome.Result.Passed, outcome.Result.Describe());
    }

    [Fact]
    public void Catalog_ids_are_unique_stable_and_filterable()
    {
        Assert.Contains(ScenarioCatalog.All, s => s.Id == "llama/tp2-sp-pp2/prompt-embeds/fp32");
        Assert.Contains(ScenarioCatalog.All, s => s.Id == "gemma4/e2b-like/tp1/audio-tower/bf16/fault=matmul-no-nd-broadcast");
        Assert.Equal(ScenarioCatalog.All.Count, ScenarioCatalog.All.Select(s => s.Id).Distinct().Count());
        Assert.All(ScenarioCatalog.Filter("llama,sp,!fault"), s => Assert.True(s.Id.StartsWith("llama") && s.Id.Contains("sp") && !s.Id.Contains("fault")));
        Assert.All(ScenarioCatalog.Filter("llama/*/prompt-embeds/*"), s => Assert.Contains("prompt-embeds", s.Id));
        // Every fault the catalog injects is a mutation check somewhere: at least one scenario must catch it at a named
        // module. (Filtering on ExpectFailure and asserting its module would be a tautology: ExpectFailure is derived
        // from both.) A fault scenario with no expected module is one that must pass unseen, and those are listed here
        // by id, so a forgotten expectedFirstBadModule cannot hide a mutation check.
        string[] faultsThatMustPassUnseen = ["qwen2-vl/tp1/image/fp32/fault=attention-reshape-hidden-size"]; // bug 3 is TP-only
        var faulted = ScenarioCatalog.All.Where(s => s.Fault is not null && s.Device == "cpu").ToList();
        Assert.All(faulted.Select(s => s.Fault!).Distinct(), fault => Assert.Contains(faulted, s => s.Fault == fault && s.ExpectFailure));
        Assert.Equal(faultsThatMustPassUnseen, faulted.Where(s => !s.ExpectFailure).Select(s => s.Id).ToArray());
    }

    [Fact]
    public void A_wrong_id_gets_near_matches()
    {
        var near = ScenarioCatalog.NearMatches("llama/tp2-sp-pp2/prompt-embed/fp32");
        Assert.Equal("llama/tp2-sp-pp2/prompt-embeds/fp32", near[0]);
    }

    [Fact]
    public void A_recording_made_from_other_inputs_is_reported_as_stale_not_as_a_divergence()
    {
        var scenario = ScenarioCatalog.Find("gemma4/moe/tp1/text/fp32")!;
        var fixtures = Path.Combine(Path.GetTempPath(), "harness-stale-" + Guid.NewGuid().ToString("N"));
        try
        {
            var recorded = ReferenceBundle.Load(Fixtures.BundlePath(CatalogContexts.Recorded.FixturesDirectory, scenario.ReferenceKey));
            Assert.Equal(["input_ids"], recorded.Inputs.Keys.Order().ToArray());
            var inputs = new Dictionary<string, Harness.Engine.Tensors.Tensor>(recorded.Inputs)
            {
                ["input_ids"] = Harness.Engine.Tensors.Tensor.FromArray(new long[] { 7, 8, 9, 10, 11, 12 }, 6), // another prompt
            };
            (recorded with { Inputs = inputs }).Save(Fixtures.BundlePath(fixtures, scenario.ReferenceKey));
            foreach (var d in new[] { "tiny-gemma4-moe-fp32" })   // the model stays the recorded one
            {
                var src = Path.Combine(CatalogContexts.Recorded.FixturesDirectory, "models", d);
                var dst = Path.Combine(fixtures, "models", d);
                Directory.CreateDirectory(dst);
                foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
            }
            var ex = Assert.Throws<Harness.Engine.IO.InputException>(() => ScenarioRunner.Run(scenario, ScenarioContext.Recorded(fixtures)));
            Assert.Contains("input 'input_ids' of gemma4/moe/tp1/text/fp32 [6] differs from the recorded one", ex.Message);
            Assert.StartsWith(Fixtures.BundlePath(fixtures, scenario.ReferenceKey), ex.Message);
            Assert.Contains("harness fixtures record gemma4/moe/tp1/text/fp32", ex.Message);
        }
        finally
        {
            if (Directory.Exists(fixtures)) Directory.Delete(fixtures, recursive: true);
        }
    }

    [Fact]
    public void Recordings_carry_the_versions_seed_and_config_that_made_them()
    {
        var bundle = ReferenceBundle.Load(Fixtures.BundlePath(CatalogContexts.Recorded.FixturesDirectory, "llama-fp32-input-ids-7"));
        foreach (var key in new[] { "python", "torch", "transformers", "model_seed", "prompt_seed", "config", "scenarios" })
            Assert.True(bundle.Versions.ContainsKey(key), $"metadata lacks {key}");
        Assert.Contains("\"num_hidden_layers\":4", bundle.Versions["config"]);
        Assert.Contains("llama/tp2-sp-pp2/input-ids/fp32", bundle.Versions["scenarios"]);
        Assert.Equal([1, 7, 64], bundle.Tensors["model.layers.0.self_attn"].ShapeArray);
        Assert.Equal(8, bundle.Tokens!.Length);
    }

    [Fact]
    public void Drift_between_the_recorded_and_the_live_reference_is_reported()
    {
        // A newer torch/transformers that moves one module's output must show up as drift, not pass silently.
        var scenario = ScenarioCatalog.Find("llama/tp2-sp/input-ids/fp32")!;
        var context = CatalogContexts.Recorded;
        var recorded = ReferenceBundle.Load(Fixtures.BundlePath(context.FixturesDirectory, scenario.ReferenceKey));
        var same = ScenarioRunner.Drift(scenario, context, recorded)!;
        Assert.False(same.Drifted, same.ToString());

        var moved = new Dictionary<string, Harness.Engine.Tensors.Tensor>(recorded.Tensors);
        moved["model.norm"] = Harness.Engine.Ops.Elementwise.Mul(moved["model.norm"], 1.01);
        var drift = ScenarioRunner.Drift(scenario, context, recorded with { Tensors = moved })!;
        Assert.True(drift.Drifted, drift.ToString());
        Assert.Contains("DRIFTED: model.norm", drift.ToString());
    }
}
