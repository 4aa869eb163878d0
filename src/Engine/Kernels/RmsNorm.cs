using System.Numerics.Tensors;

namespace Harness.Engine.Kernels;

/// <summary>
/// The float32 core every HF RMSNorm shares: ms = sum(x*x) / n (torch: pow(2).mean(-1), CPU mean = sum then divide),
/// r = 1 / sqrt(ms + (float)eps) (torch's rsqrt and pow(-0.5) are both 1/sqrt on CPU), y = x * r.
/// The variants differ only in what happens after (see Ops.Norms).
/// </summary>
public static class RmsNorm
{
    public static void Row(ReadOnlySpan<float> x, Span<float> y, float eps, bool invariant)
    {
        float ms = Reductions.SumSquares(x, invariant) / x.Length;
        float r = 1f / MathF.Sqrt(ms + eps);
        TensorPrimitives.Multiply(x, r, y);
    }
}
