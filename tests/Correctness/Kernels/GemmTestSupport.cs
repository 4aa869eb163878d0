using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Kernels;

/// <summary>Shared helpers for the GEMM tests: operands, a float64 reference and the error bound.</summary>
internal static class GemmTestSupport
{
    /// <summary>
    /// Error bound factor: any order of K float32 FMAs/adds (one chain, partial sums, pairwise) satisfies
    /// |c - exact| &lt;= gamma_K * sum|a||b| with gamma_K = K*u/(1 - K*u), u = 2^-24 (Higham, ch. 3); (K + 2) * 2^-23
    /// covers that with margin and still catches any indexing or packing mistake, which errs by O(|a||b|).
    /// </summary>
    public static double Tolerance(int k) => (k + 2) * Math.Pow(2, -23);

    public static MatrixView Random(DType dtype, ulong seed, int rows, int cols) =>
        MatrixView.Of(Tensor.Uniform(dtype, seed, -1f, 1f, rows, cols));

    /// <summary>A [rows, cols] view of a [cols, rows] tensor (column-major storage).</summary>
    public static MatrixView RandomTransposed(DType dtype, ulong seed, int rows, int cols) =>
        MatrixView.Of(Tensor.Uniform(dtype, seed, -1f, 1f, cols, rows).T());

    public static GemmKernel Kernel(string name) => Enum.Parse<GemmKernel>(name);

    public static void SkipUnsupported(GemmKernel kernel) =>
        Skip.IfNot(GemmKernelSelector.IsSupported(kernel), $"CPU lacks the {kernel} GEMM kernel");

    /// <summary>C = A x B in float64, and sum |a||b| per element, from the views' widened elements.</summary>
    public static (double[] Exact, double[] Magnitude) ReferenceProduct(in MatrixView a, in MatrixView b)
    {
        int m = a.Rows, k = a.Cols, n = b.Cols;
        var av = new double[m * k];
        var bv = new double[k * n];
        for (int i = 0; i < m; i++) for (int p = 0; p < k; p++) av[i * k + p] = a.Get(i, p);
        for (int p = 0; p < k; p++) for (int j = 0; j < n; j++) bv[p * n + j] = b.Get(p, j);
        var exact = new double[m * n];
        var mag = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++)
            {
                double x = av[i * k + p];
                for (int j = 0; j < n; j++)
                {
                    exact[i * n + j] += x * bv[p * n + j];
                    mag[i * n + j] += Math.Abs(x * bv[p * n + j]);
                }
            }
        return (exact, mag);
    }

    public static void AssertClose(in MatrixView a, in MatrixView b, ReadOnlySpan<float> c, int ldc, string what) =>
        AssertClose(ReferenceProduct(a, b), a.Rows, b.Cols, a.Cols, c, ldc, what);

    public static void AssertClose((double[] Exact, double[] Magnitude) reference, int m, int n, int k, ReadOnlySpan<float> c, int ldc, string what)
    {
        var (exact, mag) = reference;
        double tol = Tolerance(k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double got = c[i * ldc + j], want = exact[i * n + j];
                double bound = tol * mag[i * n + j] + 1e-30;
                if (!(Math.Abs(got - want) <= bound))
                    Assert.Fail($"{what}: C[{i},{j}] = {got}, reference {want}, |diff| {Math.Abs(got - want):G3} > bound {bound:G3}");
            }
    }

    public static float[] Multiply(in MatrixView a, in MatrixView b, int ldc = -1)
    {
        if (ldc < 0) ldc = b.Cols;
        var c = new float[Math.Max(0, (a.Rows - 1) * ldc + b.Cols)];
        Gemm.Multiply(a, b, c, ldc);
        return c;
    }

    public static void AssertBitsEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i]))
                Assert.Fail($"{what}: element {i} differs: {expected[i]:R} vs {actual[i]:R}");
    }
}
