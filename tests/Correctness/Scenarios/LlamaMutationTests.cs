using Harness.Engine.Runtime;
using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Mutation checks of issue 4, read as bug reports: each injects a real SP/PP bug and asserts the harness FAILS the
/// scenario with a message pointing at the module where it shows first. (The catalog runs them too; these assert the
/// details: the rank, the shapes in the message, and that the fault-free control passes.)
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public class LlamaMutationTests(ITestOutputHelper output)
{
    private ScenarioResult Run(LlamaScenario scenario)
    {
        var result = ScenarioRunner.Run(scenario, CatalogContexts.Live()).Result;
        output.WriteLine(result.Describe());
        return result;
    }

    [SkippableTheory]
    [InlineData(InputKind.InputIds)]
    [InlineData(InputKind.PromptEmbeds)]
    public void Residual_sliced_as_0_to_L_on_every_rank_is_caught_at_layer_0_post_attention_norm_on_rank_1(InputKind input)
    {
        // Rank 1 adds rows 0..3 of the residual to its attention output for rows 4..7: the first value that depends on
        // that sum is model.layers.0.post_attention_layernorm on rank 1; rank 0 is right by luck.
        var result = Run(new LlamaScenario(2, 1, true, input, fault: Faults.SpResidualFirstSlice));
        Assert.False(result.ComparisonPassed, "the harness accepted a run with the [0:L] residual slice");
        Assert.Equal("model.layers.0.post_attention_layernorm", result.FirstBadModule);
        Assert.Equal(1, result.Layers.FirstDivergence!.Rank);
    }

    [SkippableTheory]
    [InlineData(InputKind.InputIds)]
    [InlineData(InputKind.PromptEmbeds)]
    public void Scattered_residual_sliced_across_a_PP_stage_is_caught_at_the_first_layer_of_stage_1(InputKind input)
    {
        var result = Run(new LlamaScenario(2, 2, true, input, fault: Faults.SpPpResidualSliced));
        Assert.False(result.ComparisonPassed, "the harness accepted a run whose residual was sliced at the stage boundary");
        Assert.Equal("model.layers.2", result.FirstBadModule);
        Assert.Contains("[4, 64]", result.EngineError);
    }

    [SkippableFact]
    public void Without_faults_the_same_layouts_pass()
    {
        foreach (var scenario in new[] { new LlamaScenario(2, 1, true, InputKind.InputIds), new LlamaScenario(2, 2, true, InputKind.InputIds) })
        {
            var result = Run(scenario);
            Assert.True(result.Passed, result.Describe());
        }
    }
}
