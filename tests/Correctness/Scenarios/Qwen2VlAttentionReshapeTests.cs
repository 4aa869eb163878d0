using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.Runtime;
using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Scenario 3's bug, as reported against Qwen2-VL-7B-Instruct under TP=4: "shape '[1, 359, 3584]' is invalid for input
/// of size 321664". The attention output was viewed as (bsz, q_len, hidden_size), but each of the 4 ranks holds
/// 28/4 = 7 heads of 128, so 359 * 896 = 321664 values. At TP=1 heads * head_dim == hidden_size and the bug hides.
/// </summary>
[Collection(SerialCollection.Name)]
public class Qwen2VlAttentionReshapeTests(ITestOutputHelper output)
{
    private ScenarioResult Run(int tp) =>
        ScenarioRunner.Run(new Qwen2VlScenario(tp, Qwen2VlMedia.Image) with { Fault = Faults.AttentionReshapeHiddenSize }, CatalogContexts.Recorded).Result;

    [Fact]
    public void The_hard_coded_view_is_invisible_at_TP1()
    {
        var result = Run(1);
        output.WriteLine(result.Describe());
        Assert.True(result.ComparisonPassed, "at TP=1 heads * head_dim == hidden_size, so the fault must not show: " + result.Reason);
    }

    [Fact]
    public void Under_TP4_the_tiny_model_fails_in_layer_0_self_attn_naming_both_sizes()
    {
        var result = Run(4);
        output.WriteLine(result.Describe());
        Assert.False(result.ComparisonPassed);
        Assert.Equal("model.language_model.layers.0.self_attn", result.FirstBadModule);
        // 15 prompt tokens, hidden 64, 1 of 4 heads of 16 per rank: 15 * 16 = 240 values.
        Assert.Contains("shape '[1, 15, 64]' is invalid for input of size 240", result.EngineError);
    }

    [Fact]
    public void With_Qwen2_VL_7B_text_dims_and_359_tokens_at_TP4_the_message_is_the_reported_one()
    {
        var config = Qwen2Vl7B.Config();
        Assert.Equal((3584, 28, 4, 128), (config.Text.HiddenSize, config.Text.NumAttentionHeads, config.Text.NumKeyValueHeads, config.HeadDim));
        var result = ScenarioRunner.Run(new Qwen2Vl7BAttentionScenario(Faults.AttentionReshapeHiddenSize), CatalogContexts.Recorded).Result;
        output.WriteLine(result.Describe());
        Assert.True(result.Passed, result.Reason);
        Assert.Equal("model.language_model.layers.0.self_attn", result.FirstBadModule);
        // 28/4 = 7 heads of 128 per rank: 359 * 896 = 321664 values, viewed as [1, 359, 3584].
        Assert.Contains("shape '[1, 359, 3584]' is invalid for input of size 321664", result.EngineError);
    }
}
