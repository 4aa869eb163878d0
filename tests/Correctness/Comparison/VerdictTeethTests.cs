using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Runs;
using Harness.Scenarios;
using Harness.Tests.Correctness.Scenarios;

namespace Harness.Tests.Correctness.Comparison;

/// <summary>
/// Issue 21, "verdicts with teeth": the oracle bound per dtype, the scale-bias check and the scenario's precision budget,
/// each shown failing on the bug it is for, and the planted faults caught at their module in bf16 as in fp32.
/// </summary>
[Collection(SerialCollection.Name)]
public class VerdictTeethTests
{
    private const int N = 4096;

    private static double[] Oracle(ulong seed = 7)
    {
        var rng = new SplitMix64(seed);
        return Enumerable.Range(0, N).Select(_ => 4 * rng.NextDouble() - 2).ToArray();
    }

    private static double[] Bf16(double[] x) => x.Select(v => (double)BFloat16.Round((float)v)).ToArray();

    [Fact]
    public void A_bf16_module_off_by_a_fifth_passed_C_16_and_fails_the_bf16_bound()
    {
        // As the issue found: a late bf16 module whose reference is 1e-2 off the oracle, the engine 0.187 off, passed C = 16.
        var oracle = Oracle();
        var rng = new SplitMix64(3);
        var reference = oracle.Select(o => o * (1 + 1.7e-2 * (2 * rng.NextDouble() - 1))).ToArray();     // relL2 ~1e-2
        var engine = oracle.Select((o, i) => o * (1 + 0.187 * Math.Sin(i))).ToArray();
        Assert.True(OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [N], new OracleBound(16, 4, 1e-4)).Passed);
        var r = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [N]);
        Assert.False(r.Passed, r.ToString());
        Assert.Equal(3, r.Bound.ErrorRatio);
    }

    [Fact]
    public void A_bf16_engine_that_rounds_where_the_reference_rounds_passes()
    {
        var oracle = Oracle();
        var r = OracleResult.Judge(Bf16(oracle), Bf16(oracle), oracle, DType.BFloat16, [N]);
        Assert.True(r.Passed, r.ToString());
        Assert.Equal(1, r.ErrorRatio);
    }

    [Fact]
    public void A_uniform_scale_error_under_the_noise_is_caught_by_the_scale_bias()
    {
        // 0.2 % too large everywhere (a wrong eps or residual scale, a truncating conversion): under 3x the reference's
        // relative L2, but independent rounding noise never lines up with the oracle like that.
        var oracle = Oracle();
        var reference = Bf16(oracle);
        var engine = Bf16(oracle.Select(o => o * 1.002).ToArray());
        var r = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [N]);
        Assert.True(r.EngineRelativeL2 <= r.L2Bound, r.ToString());          // the norm-wise ratio alone lets it through
        Assert.False(r.BiasPassed, r.ToString());
        Assert.False(r.Passed);
        Assert.Contains("OUTSIDE", r.ToString());
    }

    /// <summary>[rows, cols] oracle whose row 0 is <paramref name="row0"/> times larger than the others (token 0's attention
    /// output is its own value vector; every later row is an average that shrinks).</summary>
    private static double[] Rows(int rows, int cols, double row0, ulong seed)
    {
        var rng = new SplitMix64(seed);
        return Enumerable.Range(0, rows * cols).Select(i => (i < cols ? row0 : 1) * (4 * rng.NextDouble() - 2)).ToArray();
    }

    /// <summary>Each row scaled by its own 1 + N(0, spread)-like factor (one softmax normaliser or rounded reduction per row), then bf16.</summary>
    private static double[] RowScaled(double[] oracle, int cols, double spread, ulong seed, double? row0 = null)
    {
        var rng = new SplitMix64(seed);
        var scale = Enumerable.Range(0, oracle.Length / cols).Select(_ => 1 + spread * (2 * rng.NextDouble() - 1)).ToArray();
        if (row0 is { } first) scale[0] = 1 + first;
        return Bf16(oracle.Select((o, i) => o * scale[i / cols]).ToArray());
    }

    [Fact]
    public void A_per_row_scale_error_carried_by_one_large_row_is_not_a_bias_1_1B_tp2_sp_attention()
    {
        // Issue 21's 1.1B compare at TP=2 with SP (H100, transformers 5.17): model.layers.9.self_attn (rank 0, tokens
        // 0..63) failed the bias check alone, beta 1.1e-3 against a bound of 1.0e-3 from elementwise noise, relative L2
        // 1.23e-2 against the reference's own 1.20e-2. Row 0 dominates <o, o>, so beta is one row's scale error: one
        // sample, not a bias. The row-clustered standard error sees that; the elementwise one alone did not.
        const int rows = 64, cols = 2048;
        var oracle = Rows(rows, cols, 8, 11);
        var reference = RowScaled(oracle, cols, 4e-3, 12, row0: -1e-4);     // the reference's row 0 happens to land close
        var engine = RowScaled(oracle, cols, 4e-3, 13, row0: 3e-3);          // the engine's 3e-3 off: within the per-row spread
        var r = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [1, rows, cols]);
        double eVar = 0, oSq = 0;
        for (int i = 0; i < oracle.Length; i++) { double d = engine[i] - oracle[i]; eVar += d * d * oracle[i] * oracle[i]; oSq += oracle[i] * oracle[i]; }
        double elementwiseBound = r.Bound.ErrorRatio * Math.Abs(r.ReferenceScaleBias) + r.Bound.BiasSigmas * Math.Sqrt(eVar) / oSq + r.Bound.FloorUlps / 256.0;
        Assert.True(Math.Abs(r.EngineScaleBias) > elementwiseBound, $"the case must be one the elementwise sigma alone fails: {r}");
        Assert.True(r.Passed, r.ToString());
    }

    [Fact]
    public void A_bias_of_a_tenth_of_the_error_is_left_to_the_norm_wise_bound_1_1B_tp2_sp_on_the_h200()
    {
        // The same compare on an H200: model.layers.13.self_attn (rank 1, tokens 64..127) had relative L2 1.04e-2 against
        // the reference's own 9.9e-3, beta 8.9e-4 against a bound of 7.5e-4 (the reference's own -5e-6): a component of
        // 0.09 of the error, in rows without token 0. Built here as noise with a 0.09 share along the oracle.
        const int rows = 64, cols = 2048;
        var oracle = Rows(rows, cols, 1, 21);
        var reference = Bf16(oracle.Select((o, i) => o * (1 + 1.7e-2 * Math.Sin(3.1 * i))).ToArray());
        var rng = new SplitMix64(22);
        var engine = oracle.Select(o => o * (1 + 9e-4 + 1.7e-2 * (2 * rng.NextDouble() - 1))).ToArray();
        var r = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [1, rows, cols]);
        Assert.InRange(Math.Abs(r.EngineScaleBias) / r.EngineRelativeL2, 0.05, 0.15);
        Assert.True(r.EngineRelativeL2 <= r.L2Bound, r.ToString());
        Assert.True(r.Passed, r.ToString());
    }

    /// <summary>One token's row [1, 1, 1536]: the reference with relative L2 <paramref name="refL2"/> of noise and no bias,
    /// the engine with <paramref name="engL2"/> of noise plus a component <paramref name="beta"/> along the oracle.</summary>
    private static (double[] Oracle, double[] Reference, double[] Engine) Step(double refL2, double engL2, double beta, ulong seed)
    {
        const int wide = 1536;
        var rng = new SplitMix64(seed);
        var oracle = Enumerable.Range(0, wide).Select(_ => 2 * rng.NextDouble() - 1).ToArray();
        double norm = Math.Sqrt(oracle.Sum(o => o * o));
        double[] Noise(double l2)
        {
            var n = Enumerable.Range(0, wide).Select(_ => 2 * rng.NextDouble() - 1).ToArray();
            double along = n.Zip(oracle).Sum(p => p.First * p.Second) / (norm * norm);
            for (int i = 0; i < wide; i++) n[i] -= along * oracle[i];                           // no component along o
            double scale = l2 * norm / Math.Sqrt(n.Sum(v => v * v));
            return n.Select(v => v * scale).ToArray();
        }
        var rn = Noise(refL2);
        var en = Noise(Math.Sqrt(engL2 * engL2 - beta * beta));
        return (oracle, oracle.Select((o, i) => o + rn[i]).ToArray(), oracle.Select((o, i) => o * (1 + beta) + en[i]).ToArray());
    }

    [Fact]
    public void A_decode_step_row_with_a_bias_of_under_half_its_error_is_left_to_the_norm_wise_bound_gemma4_e2b_per_layer_projection()
    {
        // Gemma4-E2B text in bf16 on an H100 (transformers 5.17): step 1 of layers.9.per_layer_projection, one token's row,
        // failed on the bias alone: beta -4.39e-3 against a bound of 4.26e-3 (0.25 of relL2(e) 1.51e-2 was the larger term),
        // the reference's own 1.47e-2 and -1.0e-4; four such cells of 954, at per_layer_projection only (a projection up from
        // 256 features: its error spans few directions, and one row has no row-clustered estimate). The same numbers here.
        var (oracle, reference, engine) = Step(1.47e-2, 1.51e-2, -4.39e-3, 9);
        var before = OracleBound.For(DType.BFloat16) with { SingleRowBiasShare = 0.25 };
        var old = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [1, 1, 1536], before);
        Assert.False(old.BiasPassed, old.ToString());                         // the share every row had: the false alarm
        var r = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [1, 1, 1536]);
        Assert.True(r.Passed, r.ToString());
        // The prefill's [1, 64, 1536] keeps the 0.25 share (its rows give the row-clustered estimate).
        Assert.Equal(0.25, r.Bound.BiasShare);
    }

    [Fact]
    public void A_decode_step_row_scaled_wrong_still_fails_on_its_bias()
    {
        // The same row with the error mostly a scale (a wrong eps or scale acting on the generated token only): 0.8 of it.
        var (oracle, reference, engine) = Step(1.47e-2, 1.6e-2, -1.28e-2, 9);
        var r = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [1, 1, 1536]);
        Assert.True(r.EngineRelativeL2 <= r.L2Bound, r.ToString());          // the norm-wise bound alone lets it through
        Assert.False(r.BiasPassed, r.ToString());
        Assert.False(r.Passed);
    }

    [Fact]
    public void A_uniform_scale_error_in_every_row_is_still_a_bias_when_rows_are_clustered()
    {
        const int rows = 64, cols = 2048;
        var oracle = Rows(rows, cols, 1, 11);
        var reference = RowScaled(oracle, cols, 4e-3, 12);
        var engine = Bf16(RowScaled(oracle, cols, 4e-3, 13).Select(v => v * 1.005).ToArray());    // 0.5 % too large everywhere
        var r = OracleResult.Judge(engine, reference, oracle, DType.BFloat16, [1, rows, cols]);
        Assert.True(r.EngineRelativeL2 <= r.L2Bound, r.ToString());          // under the norm-wise bound, as before
        Assert.False(r.BiasPassed, r.ToString());
        Assert.False(r.Passed);
    }

    [Fact]
    public void An_engine_noisier_everywhere_but_within_C_at_each_module_fails_the_precision_budget_at_the_first_module_over_it()
    {
        var capture = new ActivationCapture();
        var reference = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var modules = new List<string>();
        var rng = new SplitMix64(11);
        for (int m = 0; m < 6; m++)
        {
            string name = $"model.layers.{m}";
            modules.Add(name);
            var o = Oracle((ulong)m + 1);
            var noise = o.Select(_ => 2 * rng.NextDouble() - 1).ToArray();
            var r = o.Select((v, i) => v + 3e-2 * noise[i]).ToArray();
            var e = o.Select((v, i) => v + 3e-2 * noise[i] * (m == 0 ? 1 : 1.6)).ToArray();   // 1.6x from the second module on
            reference[name] = Tensor.FromArray(r.Select(x => (float)x).ToArray(), N).To(DType.BFloat16).To(DType.Float32);
            reference[LayerComparison.OraclePrefix + name] = Tensor.FromArray(o, N);
            capture.Record(name, Tensor.FromArray(e.Select(x => (float)x).ToArray(), N).To(DType.BFloat16), ShardSpec.Whole);
        }
        var report = LayerComparison.Run(reference, capture, modules);
        Assert.All(report.Rows, row => Assert.Equal(LayerVerdict.Pass, row.Verdict));
        Assert.False(report.Passed, report.ToString());
        Assert.NotNull(report.Budget);
        Assert.False(report.Budget!.Passed);
        Assert.Equal("model.layers.1", report.FirstDivergence!.Module);
        Assert.Contains("precision budget", report.ToString());
    }

    [Theory]
    [InlineData("llama/tp1/input-ids/bf16/fault=rms-norm-sum-of-squares-bf16", "model.layers.0.input_layernorm")]
    [InlineData("llama/tp1/input-ids/fp32/fault=rms-norm-sum-of-squares-bf16", "model.layers.0.input_layernorm")]
    [InlineData("llama/tp1/input-ids/bf16/fault=rope-theta-default", "model.layers.0.self_attn")]
    [InlineData("llama/tp1/input-ids/fp32/fault=rope-theta-default", "model.layers.0.self_attn")]
    [InlineData("llama/tp1/input-ids/bf16/fault=residual-scale-off", "model.layers.0")]
    [InlineData("llama/tp1/input-ids/fp32/fault=residual-scale-off", "model.layers.0.post_attention_layernorm")]
    [InlineData("llama/tp1/input-ids/fp32/fault=rms-norm-eps-default", "model.layers.0.input_layernorm")]
    public void A_planted_bug_is_caught_at_the_module_where_it_acts(string id, string module)
    {
        var outcome = ScenarioRunner.Run(ScenarioCatalog.Find(id)!, CatalogContexts.Recorded);
        Assert.False(outcome.Result.ComparisonPassed, outcome.Result.Describe());
        Assert.Equal(module, outcome.Result.FirstBadModule);
    }

    [Fact]
    public void The_precision_only_bug_is_caught_without_a_baseline_and_the_correct_engine_is_not()
    {
        var bug = ScenarioRunner.Run(ScenarioCatalog.Find("llama/tp1/input-ids/bf16/fault=rms-norm-sum-of-squares-bf16")!, CatalogContexts.Recorded).Result;
        var ok = ScenarioRunner.Run(ScenarioCatalog.Find("llama/tp1/input-ids/bf16")!, CatalogContexts.Recorded).Result;
        Assert.True(ok.ComparisonPassed, ok.Describe());
        Assert.True(ok.Layers.Budget!.GeometricMean < 1.1, ok.Layers.Budget.ToString());       // bit-for-bit HF's roundings
        Assert.False(bug.ComparisonPassed, bug.Describe());
        Assert.Contains(Faults.RmsNormSumOfSquaresBf16, Faults.Known.Keys);
    }
}
