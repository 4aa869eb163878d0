using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Ops;

/// <summary>
/// Tolerances against float64 references. float32 ops round once per elementary step; TensorPrimitives' exp/log/tanh
/// are within ~2 ulp (2.4e-7 relative), reductions of n terms add ~n*eps/2 worst case but ~sqrt(n)*eps in practice,
/// so 1e-6 relative covers element-wise ops and 1e-5 covers row reductions up to a few thousand terms; an absolute
/// floor of 1e-7 covers results near zero (cancellation in x - max, q*cos + rh*sin). bf16 results must equal the
/// float64 reference rounded to float32 then to bf16 (torch's single rounding), or sit 1 bf16 ulp away where the float32
/// intermediate lies within float32 error of a bf16 rounding boundary.
/// </summary>
internal static class Tol
{
    public const double F32ElementwiseRel = 1e-6;
    public const double F32ReductionRel = 1e-5;
    public const double F32Abs = 1e-7;
    public const int Bf16MaxUlp = 1;
}

internal static class OpsTestUtil
{
    public static Tensor Rand(DType dt, ulong seed, params int[] shape) => Tensor.Randn(dt, seed, shape);

    public static void AssertClose(double[] expected, Tensor got, double rel, double abs, string what)
    {
        var g = got.ToDoubleArray();
        Assert.Equal(expected.Length, g.Length);
        for (int i = 0; i < g.Length; i++)
        {
            double e = expected[i];
            if (double.IsNaN(e)) { Assert.True(double.IsNaN(g[i]), $"{what}[{i}]: expected NaN, got {g[i]}"); continue; }
            if (double.IsInfinity(e)) { Assert.Equal(e, g[i]); continue; }
            double err = Math.Abs(g[i] - e);
            Assert.True(err <= abs + rel * Math.Abs(e), $"{what}[{i}]: got {g[i]:R}, expected {e:R} (err {err:E3})");
        }
    }

    /// <summary>got (bf16) vs the float64 reference rounded to float32 then bf16; at most maxUlp bf16 ulps apart.</summary>
    public static void AssertBf16(double[] expected, Tensor got, int maxUlp, string what, double abs = 0)
    {
        Assert.Equal(DType.BFloat16, got.DType);
        var bits = got.ToBFloat16Bits();
        Assert.Equal(expected.Length, bits.Length);
        for (int i = 0; i < bits.Length; i++)
        {
            ushort e = BFloat16.FromFloat((float)expected[i]);
            int d = Math.Abs(Ordered(bits[i]) - Ordered(e));
            Assert.True(d <= maxUlp || Math.Abs(BFloat16.ToFloat(bits[i]) - expected[i]) <= abs,
                $"{what}[{i}]: got {BFloat16.ToFloat(bits[i]):R}, expected {BFloat16.ToFloat(e):R} (from {expected[i]:R}), {d} bf16 ulps");
        }
    }

    /// <summary>Maps bf16 bits to a monotonic integer line so ulp distance is a subtraction (+0 and -0 coincide).</summary>
    private static int Ordered(ushort b) => (b & 0x8000) != 0 ? -(b & 0x7FFF) : b;

    /// <summary>Float64 reference of a broadcasting binary op, computed index by index.</summary>
    public static double[] RefBinary(Tensor a, Tensor b, Func<double, double, double> f)
    {
        var shape = Shape.Broadcast(a.Shape, b.Shape);
        int n = (int)Shape.NumEl(shape);
        var result = new double[n];
        var idx = new int[shape.Length];
        for (int flat = 0; flat < n; flat++)
        {
            int rem = flat;
            for (int d = shape.Length - 1; d >= 0; d--) { idx[d] = rem % shape[d]; rem /= shape[d]; }
            result[flat] = f(a.At(Map(idx, a)), b.At(Map(idx, b)));
        }
        return result;
    }

    private static int[] Map(int[] idx, Tensor t)
    {
        var r = new int[t.Rank];
        int lead = idx.Length - t.Rank;
        for (int d = 0; d < t.Rank; d++) r[d] = t.Shape[d] == 1 ? 0 : idx[d + lead];
        return r;
    }

    /// <summary>The reference rounded to float32: what one correctly rounded float32 op gives.</summary>
    public static double[] F32(double[] v) => v.Select(x => (double)(float)x).ToArray();

    /// <summary>Rows of the last dim of a tensor, as doubles.</summary>
    public static double[][] Rows(Tensor x)
    {
        var v = x.ToDoubleArray();
        int n = x.Size(-1);
        return Enumerable.Range(0, v.Length / n).Select(r => v.AsSpan(r * n, n).ToArray()).ToArray();
    }

    public static double[] RowMap(Tensor x, Func<double[], double[]> f) => Rows(x).SelectMany(f).ToArray();
}
