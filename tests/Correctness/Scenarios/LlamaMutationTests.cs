using Harness.Engine.Runtime;
using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Mutation checks: each injects a real SP/PP bug into the engine and asserts the harness FAILS the scenario with a
/// message that points at the module where it shows first. A check that cannot fail is a defect.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public class LlamaMutationTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData(InputKind.InputIds)]
    [InlineData(InputKind.PromptEmbeds)]
    public void Residual_sliced_as_0_to_L_on_every_rank_is_caught_at_layer_0_post_attention_norm(InputKind input)
    {
        // Rank 1 adds rows 0..3 of the residual to its attention output for rows 4..7: the first value that
        // depends on that sum is model.layers.0.post_attention_layernorm on rank 1.
        var scenario = new LlamaScenario(2, 1, true, input, Fault: Faults.SpResidualFirstSlice);
        var result = LlamaRunnerFixture.Runner().Run(scenario);
        output.WriteLine(result.Describe());
        Assert.False(result.Passed, "the harness accepted a run with the [0:L] residual slice");
        Assert.Equal("model.layers.0.post_attention_layernorm", result.FirstBadModule);
        Assert.Equal(1, result.Layers.FirstDivergence!.Rank);
    }

    [SkippableTheory]
    [InlineData(InputKind.InputIds)]
    [InlineData(InputKind.PromptEmbeds)]
    public void Scattered_residual_sliced_across_a_PP_stage_is_caught_at_the_first_layer_of_stage_1(InputKind input)
    {
        var scenario = new LlamaScenario(2, 2, true, input, Fault: Faults.SpPpResidualSliced);
        var result = LlamaRunnerFixture.Runner().Run(scenario);
        output.WriteLine(result.Describe());
        Assert.False(result.Passed, "the harness accepted a run whose residual was sliced at the stage boundary");
        Assert.Equal("model.layers.2", result.FirstBadModule);
        Assert.Contains("[4, 64]", result.EngineError);
    }

    [SkippableFact]
    public void Without_faults_the_same_layouts_pass()
    {
        // The controls of the two checks above, so neither passes for a reason other than the fault.
        var runner = LlamaRunnerFixture.Runner();
        foreach (var scenario in new[] { new LlamaScenario(2, 1, true, InputKind.InputIds), new LlamaScenario(2, 2, true, InputKind.InputIds) })
        {
            var result = runner.Run(scenario);
            Assert.True(result.Passed, result.Describe());
        }
    }
}
