using Harness.Comparison;
using Harness.Engine.Layers;
using Harness.Engine.Tensors;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// Scenario 5: Gemma4's MoE experts use tanh-approximate GELU (gelu_pytorch_tanh). An engine that takes exact GELU
/// there is off by up to ~5e-4 per activation. The float32 policy must reject that engine; in bfloat16 a correct engine
/// must be accepted every time (20 seeds in a row), never flaking on rounding.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public class GeluTanhDiscriminationTests(ITestOutputHelper output)
{
    private const int Tokens = 16, Hidden = 64, Intermediate = 128;

    private sealed record Expert(Tensor X, Tensor Gate, Tensor Up, Tensor Down);

    // Unit-scale activations: x ~ N(0, 1), weights ~ N(0, 1/fan_in), so every layer output is O(1).
    private static Expert Build(ulong seed, DType dtype) => new(
        Tensor.Normal(dtype, seed * 10 + 1, 0, 1, Tokens, Hidden),
        Tensor.Normal(dtype, seed * 10 + 2, 0, 1 / MathF.Sqrt(Hidden), Intermediate, Hidden),
        Tensor.Normal(dtype, seed * 10 + 3, 0, 1 / MathF.Sqrt(Hidden), Intermediate, Hidden),
        Tensor.Normal(dtype, seed * 10 + 4, 0, 1 / MathF.Sqrt(Intermediate), Hidden, Intermediate));

    private static Tensor Engine(Expert e, string act) => GatedMlp.FromWeights(e.Gate, e.Up, e.Down, act).Forward(e.X);

    [SkippableFact]
    public void Float32_policy_rejects_exact_gelu_where_the_reference_uses_tanh_gelu()
    {
        var reference = LiveReference.Client();
        var e = Build(1, DType.Float32);
        var expected = reference.Mlp("gelu_pytorch_tanh", e.X, e.Gate, e.Up, e.Down);

        var correct = TensorComparer.Compare("expert, engine gelu_pytorch_tanh", Engine(e, "gelu_pytorch_tanh"), expected, Tolerances.Float32Gemm);
        var buggy = TensorComparer.Compare("expert, engine gelu (exact) - the bug", Engine(e, "gelu"), expected, Tolerances.Float32Gemm);
        output.WriteLine(correct.ToString());
        output.WriteLine(buggy.ToString());
        output.WriteLine($"error budget (float32): correct engine max abs {correct.MaxAbsError:E2}, exact-gelu engine {buggy.MaxAbsError:E2}, " +
                         $"a {buggy.MaxAbsError / Math.Max(correct.MaxAbsError, 1e-30):F0}x gap; tolerance {Tolerances.Float32Gemm}");

        Assert.True(correct.Passed, correct.ToString());
        Assert.False(buggy.Passed, "the float32 policy accepted exact GELU in place of tanh GELU:\n" + buggy);
        Assert.True(buggy.Mismatches > buggy.Total / 10, $"only {buggy.Mismatches} of {buggy.Total} elements caught the mix-up");
    }

    [SkippableFact]
    public void BFloat16_policy_accepts_a_correct_engine_on_20_seeds_in_a_row()
    {
        var reference = LiveReference.Client();
        double worstRatio = 0, worstAbs = 0, bugAbs = 0;
        for (ulong seed = 1; seed <= 20; seed++)
        {
            var e = Build(seed, DType.BFloat16);
            var expected = reference.Mlp("gelu_pytorch_tanh", e.X, e.Gate, e.Up, e.Down);
            var r = TensorComparer.Compare($"expert bf16 seed {seed}", Engine(e, "gelu_pytorch_tanh"), expected, Tolerances.BFloat16Layer);
            Assert.True(r.Passed, r.ToString());
            worstAbs = Math.Max(worstAbs, r.MaxAbsError);
            worstRatio = Math.Max(worstRatio, Tolerances.BFloat16Layer.Excess(r.WorstActual, r.WorstExpected));
            bugAbs = Math.Max(bugAbs, TensorComparer.Compare("exact gelu", Engine(e, "gelu"), expected, Tolerances.BFloat16Layer).MaxAbsError);
        }
        output.WriteLine($"error budget (bfloat16, 20 seeds): correct engine worst max abs error {worstAbs:E2}, the worst element used {worstRatio * 100:F0}% of {Tolerances.BFloat16Layer}; " +
                         $"exact gelu would differ by up to {bugAbs:E2}, only where a bf16 rounding flips, so bf16 runs catch the mix-up by chance; float32 runs catch it every time");
    }
}
