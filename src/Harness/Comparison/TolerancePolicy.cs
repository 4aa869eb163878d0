using Harness.Engine.Tensors;

namespace Harness.Comparison;

/// <summary>
/// An allclose rule: |actual - expected| &lt;= Atol + Rtol * |expected|, elementwise (torch.testing.assert_close's rule).
/// Each policy has a name and says why its numbers are what they are.
/// </summary>
public sealed record TolerancePolicy(string Name, double Rtol, double Atol, string Justification)
{
    /// <summary>
    /// When set, the policy is norm-wise: a tensor passes when its relative L2 error is at most this, whatever single
    /// elements do (the allclose counts are still reported). For rounding noise that has no per-element bound.
    /// </summary>
    public double? MaxRelativeL2 { get; init; }

    public bool Accepts(double actual, double expected)
    {
        if (double.IsNaN(expected) || double.IsNaN(actual)) return double.IsNaN(expected) && double.IsNaN(actual);
        if (double.IsInfinity(expected) || double.IsInfinity(actual)) return actual == expected;
        return Math.Abs(actual - expected) <= Atol + Rtol * Math.Abs(expected);
    }

    /// <summary>How far past the allowed error an element is (1 = exactly at the limit).</summary>
    public double Excess(double actual, double expected)
    {
        if (Accepts(actual, expected)) return Math.Abs(actual - expected) / (Atol + Rtol * Math.Abs(expected));
        if (double.IsNaN(actual) || double.IsNaN(expected) || double.IsInfinity(actual) || double.IsInfinity(expected))
            return double.PositiveInfinity;
        return Math.Abs(actual - expected) / (Atol + Rtol * Math.Abs(expected));
    }

    public override string ToString() => MaxRelativeL2 is double l2
        ? $"{Name} (relative L2 <= {l2:G3})"
        : $"{Name} (rtol {Rtol:G3}, atol {Atol:G3})";
}

/// <summary>The named tolerance policies. Defaults are torch.testing.assert_close's; overrides say what they cover.</summary>
public static class Tolerances
{
    /// <summary>torch.testing's float32 default: about 10 ulps relative.</summary>
    public static readonly TolerancePolicy Float32 = new("float32", 1.3e-6, 1e-5,
        "torch.testing.assert_close default for float32 (~10 float32 ulps relative)");

    /// <summary>torch.testing's bfloat16 default: two bf16 ulps (2^-7 each at the top of a binade... 1.6e-2 covers one ulp anywhere).</summary>
    public static readonly TolerancePolicy BFloat16 = new("bfloat16", 1.6e-2, 1e-5,
        "torch.testing.assert_close default for bfloat16 (one bf16 ulp is up to 2^-7 = 7.8e-3 relative; 1.6e-2 is two)");

    public static readonly TolerancePolicy Float16 = new("float16", 1e-3, 1e-5,
        "torch.testing.assert_close default for float16 (one fp16 ulp is up to 2^-10 = 9.8e-4 relative)");

    /// <summary>
    /// float32 GEMM against another BLAS: both accumulate in float32 but block K differently, so the error grows like
    /// sqrt(K) * eps * |a||b|; at K up to a few thousand that is ~1e-5 relative to the row's scale.
    /// </summary>
    public static readonly TolerancePolicy Float32Gemm = new("float32-gemm", 1e-5, 1e-5,
        "float32 GEMMs with different K blocking differ by ~sqrt(K)*2^-24 of the dot product's scale; 1e-5 covers K <= 4096 with unit-variance inputs");

    /// <summary>
    /// bfloat16 GEMM against another BLAS: the float32 sums differ in their last bits, and where a sum lies near a bf16
    /// rounding boundary the two results round to neighbouring bf16 values: one bf16 ulp (up to 2^-7 relative). Near-zero
    /// outputs (cancellation) need an absolute term on the scale of one bf16 ulp of the summands' size.
    /// </summary>
    public static readonly TolerancePolicy BFloat16Gemm = new("bfloat16-gemm", 1.6e-2, 1e-2,
        "bf16 GEMMs round float32 sums once: neighbouring bf16 values (1 ulp, <= 2^-7 relative) where the sums straddle a rounding boundary; atol 1e-2 covers cancellation to near zero for unit-scale inputs");

    /// <summary>
    /// A bfloat16 layer (linear -> activation -> linear) against torch, with unit-scale activations: every intermediate
    /// is rounded to bf16, and where two float32 sums straddle a rounding boundary the results take neighbouring bf16
    /// values. Each such flip moves an output by one bf16 ulp of an O(1) intermediate times a weight of O(1/sqrt(fan_in)),
    /// so elements that cancel to near zero need an absolute allowance of one bf16 ulp of 1 (2^-8 = 3.9e-3).
    /// Measured on the 64x128 expert over 20 seeds: 2.4e-4 worst, a 16x margin.
    /// </summary>
    public static readonly TolerancePolicy BFloat16Layer = new("bfloat16-layer", 1.6e-2, 3.9e-3,
        "bf16 intermediates round once per op; a one-ulp flip upstream moves unit-scale outputs by about one bf16 ulp of 1 (2^-8)");

    /// <summary>
    /// A bfloat16 model under tensor parallelism, judged norm-wise: each of the tp ranks rounds its partial sum to bf16
    /// before the all-reduce (or reduce-scatter), which rounds again, where the single-device reference rounds the
    /// float32 sum once. That is about one bf16 ulp (2^-8 relative) of noise per reduction, carried along the residual
    /// stream, where single elements near zero have no useful bound. Measured on the tiny 4-layer Llama at tp=2: relative
    /// L2 up to 1.6e-2 by the last layer, identical greedy tokens; 3e-2 allows 2x. Real bugs sit far above (the [0:L]
    /// residual slice is 0.3).
    /// </summary>
    public static TolerancePolicy BFloat16TensorParallel(int tp) => tp <= 1 ? BFloat16Layer
        : new($"bfloat16-tp{tp}", 1.6e-2, 3.9e-3,
            $"bf16 under TP={tp}: partial sums rounded before each reduction, ~one bf16 ulp per reduction along the residual stream")
        { MaxRelativeL2 = 3e-2 };

    public static TolerancePolicy For(DType dtype) => dtype switch
    {
        DType.Float32 => Float32,
        DType.BFloat16 => BFloat16,
        DType.Float16 => Float16,
        _ => new TolerancePolicy("exact", 0, 0, "integer and bool tensors must be equal"),
    };

    public static TolerancePolicy GemmFor(DType dtype) => dtype switch
    {
        DType.Float32 => Float32Gemm,
        DType.BFloat16 => BFloat16Gemm,
        _ => For(dtype),
    };
}
