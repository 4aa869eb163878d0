using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Harness.Engine.Kernels;

/// <summary>
/// Row reductions over float32 spans.
/// <para>
/// Batch-invariant summation (<see cref="SumInvariant"/>): 16 independent lane accumulators, acc[j] += x[16k + j] over
/// the full blocks of 16, combined in a fixed tree: lane j of v = (acc[j] + acc[j+8]) + (acc[j+4] + acc[j+12]) for j in 0..3,
/// then s = (v0 + v2) + (v1 + v3), then the tail x[16*(n/16) ..] added one by one in order. The order is written out with
/// four Vector128 accumulators (4 lanes each on every machine, hardware-accelerated or not), so it does not depend on the
/// hardware vector width, the number of rows or threads. No FMA: every product is rounded before it is added, as torch's
/// pow(2) then mean does.
/// </para>
/// The normal-mode helpers use TensorPrimitives, whose order depends on the hardware vector width.
/// </summary>
public static class Reductions
{
    public const int InvariantLanes = 16;

    public static float SumInvariant(ReadOnlySpan<float> x)
    {
        int n = x.Length, i = 0;
        Vector128<float> a0 = Vector128<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        for (; i + 16 <= n; i += 16)
        {
            a0 += Vector128.Create(x.Slice(i, 4));
            a1 += Vector128.Create(x.Slice(i + 4, 4));
            a2 += Vector128.Create(x.Slice(i + 8, 4));
            a3 += Vector128.Create(x.Slice(i + 12, 4));
        }
        return Finish(a0, a1, a2, a3, x[i..], 0f, Tail.Plain);
    }

    /// <summary>sum(x[i]^2) in the invariant order (each square rounded to float first).</summary>
    public static float SumSquaresInvariant(ReadOnlySpan<float> x)
    {
        int n = x.Length, i = 0;
        Vector128<float> a0 = Vector128<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        for (; i + 16 <= n; i += 16)
        {
            var v0 = Vector128.Create(x.Slice(i, 4));
            var v1 = Vector128.Create(x.Slice(i + 4, 4));
            var v2 = Vector128.Create(x.Slice(i + 8, 4));
            var v3 = Vector128.Create(x.Slice(i + 12, 4));
            a0 += v0 * v0; a1 += v1 * v1; a2 += v2 * v2; a3 += v3 * v3;
        }
        return Finish(a0, a1, a2, a3, x[i..], 0f, Tail.Square);
    }

    /// <summary>sum((x[i] - c)^2) in the invariant order.</summary>
    public static float SumSquaredDeviationsInvariant(ReadOnlySpan<float> x, float c)
    {
        int n = x.Length, i = 0;
        var cv = Vector128.Create(c);
        Vector128<float> a0 = Vector128<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        for (; i + 16 <= n; i += 16)
        {
            var v0 = Vector128.Create(x.Slice(i, 4)) - cv;
            var v1 = Vector128.Create(x.Slice(i + 4, 4)) - cv;
            var v2 = Vector128.Create(x.Slice(i + 8, 4)) - cv;
            var v3 = Vector128.Create(x.Slice(i + 12, 4)) - cv;
            a0 += v0 * v0; a1 += v1 * v1; a2 += v2 * v2; a3 += v3 * v3;
        }
        return Finish(a0, a1, a2, a3, x[i..], c, Tail.SquaredDeviation);
    }

    private enum Tail { Plain, Square, SquaredDeviation }

    private static float Finish(Vector128<float> a0, Vector128<float> a1, Vector128<float> a2, Vector128<float> a3,
        ReadOnlySpan<float> tail, float c, Tail kind)
    {
        var v = (a0 + a2) + (a1 + a3);
        float s = (v.GetElement(0) + v.GetElement(2)) + (v.GetElement(1) + v.GetElement(3));
        foreach (var t in tail)
        {
            float term = kind switch
            {
                Tail.Plain => t,
                Tail.Square => t * t,
                _ => (t - c) * (t - c),
            };
            s += term;
        }
        return s;
    }

    /// <summary>Sum: the invariant order when asked, else TensorPrimitives (hardware-width order).</summary>
    public static float Sum(ReadOnlySpan<float> x, bool invariant) => invariant ? SumInvariant(x) : TensorPrimitives.Sum(x);

    public static float SumSquares(ReadOnlySpan<float> x, bool invariant)
    {
        if (invariant) return SumSquaresInvariant(x);
        float s = 0;
        // TensorPrimitives.SumOfSquares may fuse; keep products rounded as torch does by squaring first in chunks.
        Span<float> buf = stackalloc float[256];
        for (int i = 0; i < x.Length; i += 256)
        {
            var chunk = x.Slice(i, Math.Min(256, x.Length - i));
            var b = buf[..chunk.Length];
            TensorPrimitives.Multiply(chunk, chunk, b);
            s += TensorPrimitives.Sum(b);
        }
        return s;
    }

    public static float SumSquaredDeviations(ReadOnlySpan<float> x, float c, bool invariant)
    {
        if (invariant) return SumSquaredDeviationsInvariant(x, c);
        float s = 0;
        Span<float> buf = stackalloc float[256];
        for (int i = 0; i < x.Length; i += 256)
        {
            var chunk = x.Slice(i, Math.Min(256, x.Length - i));
            var b = buf[..chunk.Length];
            TensorPrimitives.Subtract(chunk, c, b);
            TensorPrimitives.Multiply(b, b, b);
            s += TensorPrimitives.Sum(b);
        }
        return s;
    }

    /// <summary>Maximum; NaN if any element is NaN (torch's max propagates NaN). Order-independent.</summary>
    public static float Max(ReadOnlySpan<float> x) => TensorPrimitives.Max(x);

    public static float Min(ReadOnlySpan<float> x) => TensorPrimitives.Min(x);

    /// <summary>Index of the maximum, first occurrence on ties; a NaN counts as the maximum (its first index wins), as in torch.</summary>
    public static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        float bv = x[0];
        if (float.IsNaN(bv)) return 0;
        for (int i = 1; i < x.Length; i++)
        {
            float v = x[i];
            if (float.IsNaN(v)) return i;
            if (v > bv) { bv = v; best = i; }
        }
        return best;
    }

    /// <summary>Index of the minimum, first occurrence on ties; the first NaN wins, as in torch.</summary>
    public static int ArgMin(ReadOnlySpan<float> x)
    {
        int best = 0;
        float bv = x[0];
        if (float.IsNaN(bv)) return 0;
        for (int i = 1; i < x.Length; i++)
        {
            float v = x[i];
            if (float.IsNaN(v)) return i;
            if (v < bv) { bv = v; best = i; }
        }
        return best;
    }

    public static int ArgMax(ReadOnlySpan<long> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    public static int ArgMin(ReadOnlySpan<long> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] < x[best]) best = i;
        return best;
    }
}
