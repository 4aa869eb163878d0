using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.MatmulSemantics;

/// <summary>Per-element error bounds for the engine's matmul against the float64 reference.</summary>
public static class MatmulTolerance
{
    /// <summary>
    /// Float32 accumulation over K: the classic forward bound |c - ref| <= gamma_K * sum_k |a_ik b_kj| with
    /// gamma_K ~ K * 2^-24; we allow 2x that for FMA-vs-separate rounding and the final store.
    /// </summary>
    public static double Float32Bound(int k, double absSum) => 2.0 * Math.Max(k, 1) * Math.Pow(2, -24) * absSum + 1e-30;

    /// <summary>
    /// bf16 output: the float32 result is rounded once to bf16 (8 significant bits), so half a bf16 ulp of the value
    /// (2^-9 relative) comes on top of the float32 bound; inputs are already bf16 in both computations.
    /// </summary>
    public static double BFloat16Bound(int k, double value, double absSum) => Math.Abs(value) * Math.Pow(2, -8) + Float32Bound(k, absSum);

    /// <summary>float16 output: 11 significant bits, so 2^-11 relative for the final rounding.</summary>
    public static double Float16Bound(int k, double value, double absSum) => Math.Abs(value) * Math.Pow(2, -10) + Float32Bound(k, absSum);

    public static double Bound(DType dtype, int k, double value, double absSum) => dtype switch
    {
        DType.Float32 => Float32Bound(k, absSum),
        DType.BFloat16 => BFloat16Bound(k, value, absSum),
        DType.Float16 => Float16Bound(k, value, absSum),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };
}
