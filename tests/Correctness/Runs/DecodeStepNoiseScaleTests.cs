using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Tests.Correctness.Runs;

/// <summary>
/// A decode step's module is one token's row: the reference's own error there is one small sample, and it swings from
/// step to step. On the H200 (transformers 5.17, bundle of main 0554b89) `gemma4/e2b-like/tp2/mixed/fp32/cuda` failed at
/// (step 3, `model.language_model.layers.1.per_layer_projection`): engine relative L2 5.67e-6 against float64, the
/// reference's own 4.85e-7 that step (bound 5.09e-6), while the same module's margin at step 2 was 24. A step is now
/// judged against the reference's own error over all the module's steps (root mean square), its own error still per step,
/// and bf16's step bound went from 6 to 4 with it: an engine five times the reference's noise at every step, which the
/// old bound let through, is named at its first step.
/// </summary>
public class DecodeStepNoiseScaleTests
{
    private const string Module = "model.layers.1.per_layer_projection";
    private const int N = 64;

    private static double[] Oracle(int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, N).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
    }

    /// <summary>o plus noise of relative L2 <paramref name="rel"/> (a fresh direction per seed).</summary>
    private static double[] Noisy(double[] o, double rel, int seed)
    {
        var rng = new Random(seed);
        var n = o.Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        double scale = rel * Math.Sqrt(o.Sum(x => x * x)) / Math.Sqrt(n.Sum(x => x * x));
        return o.Select((x, i) => x + scale * n[i]).ToArray();
    }

    private static Tensor Row(double[] x, DType dtype) => Tensor.FromArray(x, 1, 1, N).To(dtype);

    /// <summary>Steps 1..3 of one module: the reference's own error per step, the engine's per step.</summary>
    private static LayerReport Judge(DType dtype, double[] referenceRel, double[] engineRel)
    {
        var reference = new Dictionary<string, Tensor>();
        var capture = new ActivationCapture();
        for (int s = 1; s <= referenceRel.Length; s++)
        {
            var o = Oracle(s);
            reference[DecodeSteps.Name(s, Module)] = Row(Noisy(o, referenceRel[s - 1], 100 + s), dtype);
            reference[LayerComparison.OraclePrefix + DecodeSteps.Name(s, Module)] = Tensor.FromArray(o, 1, 1, N);
            capture.Record(DecodeSteps.Name(s, Module), Row(Noisy(o, engineRel[s - 1], 200 + s), dtype), ShardSpec.Whole);
        }
        return DecodeSteps.Judge(reference, capture, referenceRel.Length + 1, [Module]);
    }

    [Fact]
    public void A_step_where_the_reference_lands_close_to_float64_is_judged_against_the_modules_noise_not_that_sample()
    {
        // fp32, as on the H200: the reference 2e-6 off float64 at steps 1 and 2 and 2e-7 at step 3; the engine 2.4e-6 at
        // step 3: 12x that step's own sample (over C = 10), 1.5x the module's RMS over its steps.
        var report = Judge(DType.Float32, [2e-6, 2e-6, 2e-7], [2e-6, 2e-6, 2.4e-6]);
        Assert.True(report.Passed, report.ToString());
        var step3 = report.Rows.Single(r => r.Step == 3).Result!.Oracle!;
        Assert.True(step3.ErrorRatio > 10, $"the step's own ratio {step3.ErrorRatio}");
        Assert.Contains("over its steps", step3.ToString());
    }

    [Fact]
    public void Without_the_steps_noise_scale_that_step_fails_as_it_did_on_the_GPU()
    {
        // the same numbers judged one step at a time (the bound before): a false alarm at step 3
        var o = Oracle(3);
        var r = OracleResult.Judge(Noisy(o, 2.4e-6, 203).Select(x => (double)(float)x).ToArray(),
            Noisy(o, 2e-7, 103).Select(x => (double)(float)x).ToArray(), o, DType.Float32, [1, 1, N], OracleBound.ForDecodeStep(DType.Float32));
        Assert.False(r.Passed, r.ToString());
    }

    [Fact]
    public void A_bf16_engine_five_times_the_references_noise_at_every_step_is_named_at_its_first_step()
    {
        // bf16: the reference 1e-2 off float64 at every step, the engine 5e-2 (a lost-precision decode path): the old step
        // bound (C = 6 on a step's own sample) passed it; C = 4 on the module's noise names (step 1, module, rank 0).
        var report = Judge(DType.BFloat16, [1e-2, 1e-2, 1e-2], [5e-2, 5e-2, 5e-2]);
        Assert.False(report.Passed, report.ToString());
        var first = report.FirstDivergence!;
        Assert.Equal((1, Module, 0), (first.Step, first.StepModule, first.Rank));
        var ratio = first.Result!.Oracle!.ErrorRatio;
        Assert.InRange(ratio, 4, 6);                                            // inside the old bound, outside the new one
    }
}
