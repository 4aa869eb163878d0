using Harness.Reports;

namespace Harness.Tests.Correctness.Reports;

/// <summary>`harness ratios`: the distribution the oracle bounds are chosen from, per dtype and module kind.</summary>
public class RatioDistributionTests
{
    private static ModuleRecord Row(string module, double engine, double reference) =>
        new(module, 0, $"{module} (rank 0)", [1, 4], [1, 4], 0, 0, 0, 0, 4, null, ModuleRecord.Verdicts.Pass, "")
        {
            Oracle = new OracleRecord(engine, reference, 10 * reference, engine, reference, 10 * reference, 0, 0, 5, true)
            { EngineScaleBias = 0, ReferenceScaleBias = 0, BiasBound = 1 },
        };

    private static ScenarioRecord Scenario(string id, string dtype, string? fault, params ModuleRecord[] modules) =>
        new(id, "llama", "tp1", dtype, "input-ids", fault, fault is not null, true, "", 0, null, null, modules, null);

    [Theory]
    [InlineData("model.layers.3.self_attn", "attention")]
    [InlineData("model.layers.3.mlp", "mlp")]
    [InlineData("model.language_model.layers.3.post_per_layer_input_norm", "norm")]
    [InlineData("model.layers.3", "layer")]
    [InlineData("model.embed_tokens", "embed")]
    [InlineData("lm_head", "logits")]
    public void Module_kinds(string module, string kind) => Assert.Equal(kind, RatioDistribution.KindOf(module));

    [Fact]
    public void The_distribution_is_per_dtype_and_kind_over_scenarios_without_a_fault_naming_the_largest()
    {
        var report = AccuracyReport.Create([
            Scenario("llama/tp1/input-ids/bf16", "bf16", null, Row("model.layers.0.mlp", 1e-3, 1e-3), Row("model.layers.0", 1.5e-3, 1e-3)),
            Scenario("llama/tp1/input-ids/fp32", "fp32", null, Row("model.layers.0.mlp", 2e-7, 1e-7), Row("model.norm", 7e-7, 1e-7)),
            Scenario("llama/tp1/input-ids/bf16/fault=x", "bf16", "x", Row("model.layers.0.mlp", 1, 1e-3)),   // a fault: left out
        ]);
        var rows = RatioDistribution.Rows([report]);
        Assert.Equal(4, rows.Count);
        Assert.Equal(7, rows.Max(r => r.Ratio), 9);
        var text = RatioDistribution.Format([report]);
        Assert.Contains("bf16   mlp", text);
        Assert.Contains("fp32   norm", text);
        Assert.Contains("7  llama/tp1/input-ids/fp32  model.norm (rank 0)", text);
        Assert.DoesNotContain("1e+03", text);
        Assert.Equal(Math.Sqrt(1.5), RatioDistribution.GeometricMean(report.Scenarios[0])!.Value, 9);
    }
}
