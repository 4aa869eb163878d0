using Harness.Engine.Runtime;
using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Scenario 3's bug (Qwen2-VL): the attention output reshaped to the full hidden_size instead of (*input_shape, -1).
/// At TP=1 heads * head_dim == hidden_size, so the bug hides; only a TP run exposes it. Offline (recorded reference).
/// </summary>
[Collection(SerialCollection.Name)]
public class AttentionReshapeTests(ITestOutputHelper output)
{
    private ScenarioResult Run(int tp) =>
        ScenarioRunner.Run(new LlamaScenario(tp, 1, false, InputKind.InputIds) with { Fault = Faults.AttentionReshapeHiddenSize }, CatalogContexts.Recorded).Result;

    [Fact]
    public void The_hard_coded_reshape_is_invisible_at_TP1()
    {
        var result = Run(1);
        output.WriteLine(result.Describe());
        Assert.True(result.ComparisonPassed, "at TP=1 heads * head_dim == hidden_size, so the fault must not show: " + result.Reason);
    }

    [Fact]
    public void Under_TP4_it_fails_in_self_attn_with_both_sizes()
    {
        var result = Run(4);
        output.WriteLine(result.Describe());
        Assert.False(result.ComparisonPassed);
        Assert.Equal("model.layers.0.self_attn", result.FirstBadModule);
        Assert.Contains("shape '[7, 64]' is invalid for input of size 112", result.EngineError);
    }
}
