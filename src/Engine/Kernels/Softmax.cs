using System.Numerics.Tensors;

namespace Harness.Engine.Kernels;

/// <summary>
/// Softmax rows in torch's CPU arithmetic (aten _vec_softmax_lastdim / _vec_log_softmax_lastdim):
/// m = max(x); e = exp(x - m); s = sum(e); softmax = e * (1 / s); log_softmax = (x - m) - log(s).
/// bf16/fp16 rows are widened to float32 by the caller and rounded once at the end.
/// In invariant mode exp is the scalar MathF.Exp (per element, independent of vector width and position) and the sum is
/// <see cref="Reductions.SumInvariant"/>.
/// </summary>
public static class Softmax
{
    public static void Row(ReadOnlySpan<float> x, Span<float> y, bool invariant)
    {
        float m = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, m, y);
        Exp(y, y, invariant);
        float s = Reductions.Sum(y, invariant);
        TensorPrimitives.Multiply(y, 1f / s, y);
    }

    /// <summary>
    /// log_softmax of one row. For bf16/fp16 inputs torch keeps the row's sum and its log in the input dtype
    /// (scalar_t temporaries in _vec_log_softmax_lastdim), so both are rounded to <paramref name="dtype"/> here too:
    /// out = x - m - round(log(round(s))), then rounded once by the caller. Measured bit-exact against torch 2.14.
    /// </summary>
    public static void LogRow(ReadOnlySpan<float> x, Span<float> y, bool invariant, Harness.Engine.Tensors.DType dtype = Harness.Engine.Tensors.DType.Float32)
    {
        float m = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, m, y);
        Exp(y, y, invariant);
        float s = Rounding.To(Reductions.Sum(y, invariant), dtype);
        float logS = Rounding.To(MathF.Log(s), dtype);
        TensorPrimitives.Subtract(x, m, y);
        TensorPrimitives.Subtract(y, logS, y);
    }

    internal static void Exp(ReadOnlySpan<float> x, Span<float> y, bool invariant)
    {
        if (!invariant) { TensorPrimitives.Exp(x, y); return; }
        for (int i = 0; i < x.Length; i++) y[i] = MathF.Exp(x[i]);
    }
}
