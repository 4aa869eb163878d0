using Harness.Engine.Runtime;

namespace Harness.Tests.E2E;

/// <summary>
/// `harness compare --fault NAME` (issue 20 item 3): a catalog fault planted in the engine's model of a real checkpoint, the
/// reference untouched, so a user (and the real-size runs of the seed bugs) sees where the comparison catches it. A fault
/// that is unknown, that the checkpoint's family has no site for, or that the layout cannot show is one line, exit 2,
/// before any reference work.
/// </summary>
public sealed class CompareFaultTests
{
    [Theory]
    [InlineData("nosuch", "--fault: unknown fault 'nosuch'; known: ")]
    [InlineData(Faults.GeluTanhAsExact, "compare --fault gelu-tanh-as-exact: Llama has no site for it; faults compare plants in Llama: ")]
    [InlineData(Faults.SpResidualFirstSlice, "compare --fault sp-residual-first-slice: acts in sequence parallelism only: it needs --sp with --tp 2 or more (got --tp 1 --pp 1)")]
    public void An_unknown_or_inapplicable_fault_is_one_line_and_exit_2(string fault, string message)
    {
        var r = CliProcess.Run("compare", "--model", "fixtures/models/tiny-llama-fp32", "--fault", fault);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains(message, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'), l => l.Contains("fault", StringComparison.Ordinal));
        Assert.DoesNotContain("comparison:", r.Stdout);                      // nothing ran
    }

    [Fact]
    public void A_fault_in_a_tower_compare_does_not_run_is_named_with_where_it_lives()
    {
        var r = CliProcess.Run("compare", "--model", "fixtures/models/tiny-gemma4-moe-fp32", "--fault", Faults.MatmulNoNdBroadcast);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("Gemma4 has it in Gemma4AudioModel and Gemma4VisionModel, which compare does not run (it runs Gemma4ForCausalLM); " +
                        "faults compare plants in Gemma4: gelu-tanh-as-exact, gate-up-swapped", r.Stderr);
    }

    /// <summary>
    /// `--fault rope-theta-default` on a TinyLlama-1.1B-sized model (rope_theta 10000, HF's default) planted nothing and the
    /// comparison passed, which reads as a check that missed the bug: a config-edit fault that changes nothing is refused.
    /// </summary>
    [Fact]
    public void A_config_fault_the_checkpoint_already_matches_is_one_line_saying_it_would_plant_nothing()
    {
        var dir = Path.Combine(Path.GetTempPath(), "harness-fault-noop-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in Directory.GetFiles(Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", "tiny-llama-fp32"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            if (config["rope_parameters"] is System.Text.Json.Nodes.JsonObject rope) rope["rope_theta"] = 10000.0;
            else config["rope_theta"] = 10000.0;
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            var r = CliProcess.Run("compare", "--model", dir, "--fault", Faults.RopeThetaDefault);
            Assert.True(r.ExitCode == 2, r.ToString());
            Assert.Contains("compare --fault rope-theta-default: ", r.Stderr);
            Assert.Contains("already has what the fault sets", r.Stderr);
            Assert.DoesNotContain("comparison:", r.Stdout);
            // the tiny model's own rope_theta is not the default: there the fault plants a bug and is not refused up front
            var real = CliProcess.Run("compare", "--model", "fixtures/models/tiny-llama-fp32", "--fault", Faults.RopeThetaDefault, "--prompt", "1,2,x");
            Assert.DoesNotContain("already has what the fault sets", real.Stderr);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>Planted in a compare of the tiny Llama checkpoint, the residual-branch scale is caught where the catalog catches it.</summary>
    [Trait("Tier", "Live")]
    [SkippableFact]
    public void A_planted_fault_is_caught_at_its_module_in_a_compare()
    {
        LiveCliTests.RequireReference();
        var r = CliProcess.Run(["compare", "--model", "fixtures/models/tiny-llama-fp32", "--fault", Faults.ResidualScaleOff], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("fault:       residual-scale-off", r.Stdout);
        Assert.Contains("fault 'residual-scale-off' caught at model.layers.0.post_attention_layernorm", r.Stdout);
    }
}
