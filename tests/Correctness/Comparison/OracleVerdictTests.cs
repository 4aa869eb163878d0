using Harness.Engine.Capture;
using Harness.Comparison;

using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Tests.Correctness.Comparison;

/// <summary>
/// The float64 oracle verdict: the engine's error is judged against the reference's own error at the same module,
/// so a real model is not failed by fixed tolerances tuned on a toy, and a real bug still is.
/// </summary>
public class OracleVerdictTests
{
    private const int N = 65536;

    /// <summary>An oracle of unit scale, and a copy with seeded noise of relative size <paramref name="relative"/>.</summary>
    private static double[] Noisy(double[] oracle, double relative, ulong seed)
    {
        var rng = new SplitMix64(seed);
        return oracle.Select(o => o + relative * Math.Abs(o) * (2 * rng.NextDouble() - 1)).ToArray();
    }

    private static double[] Oracle(ulong seed = 7)
    {
        var rng = new SplitMix64(seed);
        return Enumerable.Range(0, N).Select(_ => 4 * rng.NextDouble() - 2).ToArray();
    }

    [Fact]
    public void The_155M_llama_false_alarm_one_element_past_float32_gemm_passes_under_the_oracle()
    {
        // As reported: fp32, TP=1, every token identical, relative L2 2e-6, but one of 65,536 elements is 1.197e-5 off
        // where float32-gemm allows 1.19e-5. The reference's own error is about half the engine's: the oracle passes it.
        var oracle = Oracle();
        var reference = Noisy(oracle, 1.5e-6, 1);
        var engine = Noisy(oracle, 3e-6, 2);
        engine[123] = reference[123] + 1.197e-5 + Tolerances.Float32Gemm.Rtol * Math.Abs(reference[123]);
        var shape = new[] { 1, 64, 1024 };
        var e = Tensor.FromArray(engine.Select(x => (float)x).ToArray(), shape);
        var r = Tensor.FromArray(reference.Select(x => (float)x).ToArray(), shape);
        var o = Tensor.FromArray(oracle, shape);

        var fixedPolicy = TensorComparer.Compare("model.layers.7", e, r, Tolerances.Float32Gemm);
        Assert.False(fixedPolicy.Passed);                               // the old verdict cried wolf
        var judged = TensorComparer.Compare("model.layers.7", e, r, Tolerances.Float32Gemm, o);
        Assert.True(judged.Passed, judged.ToString());
        Assert.Equal("oracle", judged.Verdict);
        Assert.True(judged.Oracle!.Margin > 1, judged.ToString());
    }

    [Fact]
    public void An_engine_ten_times_noisier_than_the_reference_fails()
    {
        var oracle = Oracle();
        var reference = Noisy(oracle, 1e-6, 1);
        var ok = OracleResult.Judge(Noisy(oracle, 4e-6, 2), reference, oracle, DType.Float32, [N]);
        var bad = OracleResult.Judge(Noisy(oracle, 1e-4, 3), reference, oracle, DType.Float32, [N]);
        Assert.True(ok.Passed, ok.ToString());
        Assert.False(bad.Passed, bad.ToString());
        Assert.True(bad.Margin < 1);
    }

    [Fact]
    public void Exact_gelu_in_float32_is_far_outside_but_bf16_rounding_hides_it()
    {
        // Exact vs tanh GELU differ by up to ~5e-4: hundreds of times an fp32 reference's own error, well under bf16's.
        var oracle = Oracle();
        var bug = oracle.Select((o, i) => o + 5e-4 * Math.Sin(i)).ToArray();
        var fp32Reference = Noisy(oracle, 1e-6, 1);
        Assert.False(OracleResult.Judge(bug, fp32Reference, oracle, DType.Float32, [N]).Passed);
        var bf16Reference = oracle.Select(o => (double)BFloat16.ToFloat(BFloat16.FromFloat((float)o))).ToArray();
        var bf16Engine = bug.Select(o => (double)BFloat16.ToFloat(BFloat16.FromFloat((float)o))).ToArray();
        Assert.True(OracleResult.Judge(bf16Engine, bf16Reference, oracle, DType.BFloat16, [N]).Passed);
    }

    [Fact]
    public void Where_the_reference_is_exact_the_floor_of_a_few_ulps_decides()
    {
        // HF's float64 model still runs RMSNorm in float32: at model.layers.0.input_layernorm the reference equals its oracle.
        var oracle = Oracle().Select(o => (double)(float)o).ToArray();
        var fewUlps = oracle.Select(o => (double)MathF.BitIncrement((float)o)).ToArray();
        var tooFar = oracle.Select(o => o * (1 + 1e-5)).ToArray();
        Assert.True(OracleResult.Judge(fewUlps, oracle, oracle, DType.Float32, [N]).Passed);
        var r = OracleResult.Judge(tooFar, oracle, oracle, DType.Float32, [N]);
        Assert.False(r.Passed);
        Assert.Equal(0, r.ReferenceRelativeL2);
    }

    [Fact]
    public void A_few_outliers_fit_the_budget_more_do_not()
    {
        var oracle = Oracle();
        var reference = Noisy(oracle, 1e-6, 1);
        var engine = Noisy(oracle, 2e-6, 2);
        var budget = (int)Math.Floor(OracleBound.Default.OutlierFraction * N);
        for (int i = 0; i < budget; i++) engine[i * 100] += 1e-4;
        Assert.True(OracleResult.Judge(engine, reference, oracle, DType.Float32, [N]).Passed);
        engine[N - 1] += 1e-4;
        var r = OracleResult.Judge(engine, reference, oracle, DType.Float32, [N]);
        Assert.False(r.Passed);
        Assert.Equal(budget + 1, r.Outliers);
    }

    [Fact]
    public void A_nan_in_the_engine_fails_before_any_tolerance_naming_the_first_index_and_the_count()
    {
        var reference = Tensor.FromArray([1f, 2f, float.NaN, 4f, 5f, 6f], 2, 3);
        var engine = Tensor.FromArray([1f, float.NaN, float.NaN, 4f, float.PositiveInfinity, 6f], 2, 3);
        var r = TensorComparer.Compare("model.layers.3.mlp", engine, reference, new TolerancePolicy("loose", 1e9, 1e9, "accepts anything finite"));
        Assert.False(r.Passed);
        Assert.Equal(2, r.NonFinite);                                   // index 2 is NaN on both sides: not counted
        Assert.Equal([0, 1], r.FirstNonFinite);
        Assert.Contains("NON-FINITE: 2 engine element(s) are NaN or Inf where the reference is not, the first at [0, 1]", r.ToString());
    }

    [Fact]
    public void A_layer_comparison_uses_the_oracle_where_the_reference_has_one_and_says_so()
    {
        var o = Tensor.Randn(DType.Float32, 3, [4, 16]);
        var reference = new Dictionary<string, Tensor>
        {
            ["model.layers.0.mlp"] = o,
            [LayerComparison.OraclePrefix + "model.layers.0.mlp"] = o.To(DType.Float64),
            ["model.layers.0"] = o,
        };
        var capture = new ActivationCapture();
        capture.Record("model.layers.0.mlp", o, ShardSpec.Whole);
        capture.Record("model.layers.0", o, ShardSpec.Whole);
        var report = LayerComparison.Run(reference, capture, ["model.layers.0.mlp", "model.layers.0"]);
        Assert.True(report.Passed, report.ToString());
        Assert.Equal(2, report.Rows.Count);                             // the oracle tensor is not a module of its own
        Assert.Equal("oracle", report.Rows[0].Result!.Verdict);
        Assert.NotEqual("oracle", report.Rows[1].Result!.Verdict);      // no oracle capture: the fixed policy, named
    }
}
