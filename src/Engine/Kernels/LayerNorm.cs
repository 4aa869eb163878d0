using System.Numerics.Tensors;

namespace Harness.Engine.Kernels;

/// <summary>
/// LayerNorm rows in the arithmetic of aten's CPU LayerNormKernelImpl: mean and biased variance in float32
/// (here two passes: mean = sum(x)/n, var = sum((x-mean)^2)/n; torch's Welford moments round differently),
/// rstd = 1 / sqrt(max(var, 0) + eps), y = (x * rstd + (-mean * rstd)) * gamma + beta.
/// </summary>
public static class LayerNorm
{
    public static void Row(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y, float eps, bool invariant)
    {
        int n = x.Length;
        float mean = Reductions.Sum(x, invariant) / n;
        float variance = Reductions.SumSquaredDeviations(x, mean, invariant) / n;
        float rstd = 1f / MathF.Sqrt(Math.Max(variance, 0f) + eps);
        float bias = -mean * rstd;
        TensorPrimitives.Multiply(x, rstd, y);
        TensorPrimitives.Add(y, bias, y);
        if (!gamma.IsEmpty) TensorPrimitives.Multiply(y, gamma, y);
        if (!beta.IsEmpty) TensorPrimitives.Add(y, beta, y);
    }
}
