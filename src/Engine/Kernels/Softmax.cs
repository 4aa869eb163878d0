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

    public static void LogRow(ReadOnlySpan<float> x, Span<float> y, bool invariant)
    {
        float m = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, m, y);
        Exp(y, y, invariant);
        float s = Reductions.Sum(y, invariant);
        float logS = MathF.Log(s);
        TensorPrimitives.Subtract(x, m, y);
        TensorPrimitives.Subtract(y, logS, y);
    }

    internal static void Exp(ReadOnlySpan<float> x, Span<float> y, bool invariant)
    {
        if (!invariant) { TensorPrimitives.Exp(x, y); return; }
        for (int i = 0; i < x.Length; i++) y[i] = MathF.Exp(x[i]);
    }
}
