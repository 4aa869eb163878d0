using Harness.Comparison;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Comparison;

/// <summary>The comparison reports shapes first, then errors, worst element, mismatches and relative L2.</summary>
public class TensorComparerTests
{
    [Fact]
    public void Shape_mismatch_is_reported_on_its_own_with_both_shapes()
    {
        var r = TensorComparer.Compare("model.layers.0.self_attn", Tensor.Zeros(DType.Float32, 4, 2048), Tensor.Zeros(DType.Float32, 4, 1024));
        Assert.False(r.Passed);
        Assert.False(r.ShapeMatches);
        Assert.Equal("model.layers.0.self_attn: FAIL\n  shape mismatch: engine [4, 2048] vs reference [4, 1024]\n", r.ToString());
    }

    [Fact]
    public void Errors_are_reported_in_order_with_the_worst_element()
    {
        var expected = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], 2, 3);
        var actual = Tensor.FromArray([1f, 2f, 3f, 4f, 5.5f, 6f], 2, 3);
        var r = TensorComparer.Compare("lm_head", actual, expected);
        Assert.False(r.Passed);
        Assert.Equal(0.5, r.MaxAbsError, 12);
        Assert.Equal(0.1, r.MaxRelError, 12);
        Assert.Equal([1, 1], r.WorstIndex);
        Assert.Equal(5.5, r.WorstActual);
        Assert.Equal(5.0, r.WorstExpected);
        Assert.Equal(1, r.Mismatches);
        Assert.Equal(0.5 / Math.Sqrt(91), r.RelativeL2, 12);
        var lines = r.ToString().Split('\n');
        Assert.StartsWith("lm_head: FAIL", lines[0]);
        Assert.Contains("shape [2, 3] (match)", lines[1]);
        Assert.Contains("max abs error 5.000E-001, max rel error 1.000E-001", lines[2]);
        Assert.Contains("worst element [1, 1]: engine 5.5, reference 5", lines[3]);
        Assert.Contains("mismatched 1 of 6", lines[4]);
        Assert.Contains("relative L2 error", lines[5]);
    }

    [Fact]
    public void Policies_start_from_torch_testing_defaults()
    {
        Assert.Equal((1.3e-6, 1e-5), (Tolerances.Float32.Rtol, Tolerances.Float32.Atol));
        Assert.Equal((1.6e-2, 1e-5), (Tolerances.BFloat16.Rtol, Tolerances.BFloat16.Atol));
        Assert.Equal((1e-3, 1e-5), (Tolerances.Float16.Rtol, Tolerances.Float16.Atol));
        Assert.Same(Tolerances.BFloat16, Tolerances.For(DType.BFloat16));
    }

    [Fact]
    public void Allclose_rule_matches_torch_at_the_boundary()
    {
        var p = Tolerances.Float32;
        Assert.True(p.Accepts(1.0 + 1e-5 + 1.3e-6 - 1e-12, 1.0));
        Assert.False(p.Accepts(1.0 + 1e-5 + 1.3e-6 + 1e-9, 1.0));
        Assert.True(p.Accepts(double.NaN, double.NaN));
        Assert.False(p.Accepts(double.NaN, 1.0));
        Assert.True(p.Accepts(double.PositiveInfinity, double.PositiveInfinity));
        Assert.False(p.Accepts(double.NegativeInfinity, double.PositiveInfinity));
    }

    [Fact]
    public void Identical_tensors_pass_with_zero_errors()
    {
        var t = Tensor.Randn(DType.BFloat16, 3, 5, 7);
        var r = TensorComparer.Compare("x", t, t.Clone());
        Assert.True(r.Passed, r.ToString());
        Assert.Equal(0, r.MaxAbsError);
        Assert.Equal(0, r.RelativeL2);
    }

    [Fact]
    public void Norm_wise_policy_judges_relative_L2_not_single_elements()
    {
        var expected = Tensor.FromArray([1f, 2f, 3f, 0.001f], 4);
        var actual = Tensor.FromArray([1f, 2f, 3f, 0.01f], 4); // one near-zero element off by 10x, tiny in norm
        var tp = Tolerances.BFloat16TensorParallel(2);
        var r = TensorComparer.Compare("residual", actual, expected, tp);
        Assert.True(r.Passed, r.ToString());
        Assert.Equal(1, r.Mismatches);                       // still reported
        Assert.Contains("relative L2 <= 0.03", r.ToString());
        var far = TensorComparer.Compare("residual", Tensor.FromArray([1f, 2f, 2f, 0.001f], 4), expected, tp);
        Assert.False(far.Passed, far.ToString());
    }
}
