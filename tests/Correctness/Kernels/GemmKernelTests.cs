using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Kernels.GemmTestSupport;

namespace Harness.Tests.Correctness.Kernels;

/// <summary>Every micro-kernel the CPU supports against a float64 reference, over tile edges, layouts and dtypes.</summary>
public class GemmKernelTests
{
    private static readonly int[] EdgeSizes = [1, 2, 7, 13, 17, 129, 257];

    /// <summary>(M, N, K) triples: each of M, N, K runs over the edge sizes, plus K above KC (several KC blocks).</summary>
    private static IEnumerable<(int M, int N, int K)> Shapes()
    {
        foreach (int d in EdgeSizes)
        {
            yield return (d, 17, 13);
            yield return (7, d, 13);
            yield return (13, 17, d);
            yield return (d, d, 7);
        }
        yield return (129, 257, 300);
        yield return (40, 40, 600);
        yield return (1, 257, 600);
        yield return (17, 33, 1000);
        yield return (64, 64, 0);
        // M = 1 with K >= 32 takes the GEMV path in normal mode: K tails of every length class.
        foreach (int k in new[] { 32, 37, 77, 100, 1001 }) yield return (1, 45, k);
    }

    [SkippableTheory]
    [InlineData("Scalar")]
    [InlineData("Avx2")]
    [InlineData("Avx512")]
    public void Kernel_matches_reference_across_tile_edges(string name)
    {
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var threads = ComputeSettings.UseThreads(2);
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        ulong seed = 10;
        foreach (var (m, n, k) in Shapes())
        {
            var a = Random(DType.Float32, seed++, m, k);
            var b = Random(DType.Float32, seed++, k, n);
            var bt = RandomTransposed(DType.Float32, seed++, k, n);
            var reference = ReferenceProduct(a, b);
            var referenceT = ReferenceProduct(a, bt);
            foreach (bool invariant in new[] { false, true })
            {
                using var mode = ComputeSettings.UseBatchInvariant(invariant);
                AssertClose(reference, m, n, k, Multiply(a, b), n, $"{kernel} {m}x{n}x{k} invariant={invariant}");
                AssertClose(referenceT, m, n, k, Multiply(a, bt), n, $"{kernel} {m}x{n}x{k} B^T invariant={invariant}");
            }
        }
    }

    [SkippableTheory]
    [InlineData("Scalar")]
    [InlineData("Avx2")]
    [InlineData("Avx512")]
    public void Transposed_and_broadcast_operands(string name)
    {
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var threads = ComputeSettings.UseThreads(2);
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        const int m = 37, n = 45, k = 300;
        var at = RandomTransposed(DType.Float32, 1, m, k);
        var bt = RandomTransposed(DType.Float32, 2, k, n);
        // Stride 0: every row of A is the same row; every column of B is the same column.
        var rowStorage = Tensor.Uniform(DType.Float32, 3, -1f, 1f, k).Storage;
        var aBroadcast = new MatrixView(rowStorage, DType.Float32, 0, m, k, 0, 1);
        var colStorage = Tensor.Uniform(DType.Float32, 4, -1f, 1f, k).Storage;
        var bBroadcast = new MatrixView(colStorage, DType.Float32, 0, k, n, 1, 0);
        // A scalar broadcast over a whole matrix, and an offset, strided (every other column) view.
        var scalar = new MatrixView(Tensor.Full(DType.Float32, 0.5, 1).Storage, DType.Float32, 0, k, n, 0, 0);
        var wide = Tensor.Uniform(DType.Float32, 5, -1f, 1f, m + 1, 2 * k + 1).Storage;
        var aStrided = new MatrixView(wide, DType.Float32, 2 * k + 2, m, k, 2 * k + 1, 2);
        foreach (bool invariant in new[] { false, true })
        {
            using var mode = ComputeSettings.UseBatchInvariant(invariant);
            AssertClose(at, bt, Multiply(at, bt), n, "A^T B^T");
            AssertClose(aBroadcast, bt, Multiply(aBroadcast, bt), n, "broadcast A");
            AssertClose(at, bBroadcast, Multiply(at, bBroadcast), n, "broadcast B");
            AssertClose(aStrided, scalar, Multiply(aStrided, scalar), n, "strided A, scalar B");
            var oneRow = aBroadcast with { Rows = 1 };
            AssertClose(oneRow, bBroadcast, Multiply(oneRow, bBroadcast), n, "one broadcast row");
        }
    }

    [SkippableTheory]
    [InlineData("Scalar")]
    [InlineData("Avx2")]
    [InlineData("Avx512")]
    public void Half_precision_inputs_are_widened_exactly(string name)
    {
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var threads = ComputeSettings.UseThreads(2);
        foreach (var (da, db) in new[] { (DType.BFloat16, DType.BFloat16), (DType.Float16, DType.Float16), (DType.Float32, DType.BFloat16), (DType.Float16, DType.Float32) })
            foreach (int m in new[] { 1, 13 })
                foreach (bool invariant in new[] { false, true })
                {
                    using var mode = ComputeSettings.UseBatchInvariant(invariant);
                    const int n = 35, k = 277;
                    var a = Random(da, 11, m, k);
                    var b = Random(db, 12, k, n);
                    var bt = RandomTransposed(db, 13, k, n);
                    AssertClose(a, b, Multiply(a, b), n, $"{da} x {db}, M={m}");
                    AssertClose(a, bt, Multiply(a, bt), n, $"{da} x {db}^T, M={m}");
                    // Exact widening: the product equals the same product on float32 copies, bit for bit
                    // (except normal-mode M=1 with fp16 B: the fp32 copy may take the GEMV path, fp16 does not).
                    if (!invariant && m == 1 && db == DType.Float16) continue;
                    var a32 = Widen(a);
                    var bt32 = Widen(bt);
                    AssertBitsEqual(Multiply(a32, bt32), Multiply(a, bt), $"{da} x {db}^T widened, M={m}");
                }
    }

    private static MatrixView Widen(MatrixView v)
    {
        var data = new float[v.Rows * v.Cols];
        for (int i = 0; i < v.Rows; i++) for (int j = 0; j < v.Cols; j++) data[i * v.Cols + j] = v.Get(i, j);
        var t = Tensor.FromArray(data, v.Rows, v.Cols);
        // Keep the original layout so the same path (GEMV when B is contiguous along K) is taken.
        if (v.RowStride == 1 && v.Cols > 1) t = t.T().Contiguous().T();
        return MatrixView.Of(t);
    }

    [Fact]
    public void Leading_dimension_larger_than_n_leaves_the_gap_untouched()
    {
        using var threads = ComputeSettings.UseThreads(2);
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        const int m = 19, n = 21, k = 40, ldc = 32;
        var a = Random(DType.Float32, 21, m, k);
        var b = Random(DType.Float32, 22, k, n);
        foreach (bool invariant in new[] { false, true })
        {
            using var mode = ComputeSettings.UseBatchInvariant(invariant);
            var c = new float[m * ldc];
            Array.Fill(c, float.NaN);
            Gemm.Multiply(a, b, c, ldc);
            AssertClose(a, b, c, ldc, "ldc 32");
            for (int i = 0; i < m; i++)
                for (int j = n; j < ldc && i * ldc + j < c.Length; j++)
                    Assert.True(float.IsNaN(c[i * ldc + j]), $"C[{i},{j}] in the ldc gap was written");
        }
    }

    [Fact]
    public void Multiply_batched_matches_reference_and_single_products()
    {
        using var threads = ComputeSettings.UseThreads(2);
        foreach (var (m, n, k, count) in new[] { (5, 9, 70, 7), (1, 64, 300, 3), (260, 256, 256, 2) })
            foreach (bool invariant in new[] { false, true })
            {
                using var mode = ComputeSettings.UseBatchInvariant(invariant);
                const int pad = 3;
                int ldc = n + pad, stride = m * ldc + 5;
                var a = new MatrixView[count];
                var b = new MatrixView[count];
                for (int i = 0; i < count; i++)
                {
                    a[i] = Random(DType.Float32, (ulong)(100 + i), m, k);
                    b[i] = i % 2 == 0 ? Random(DType.Float32, (ulong)(200 + i), k, n) : RandomTransposed(DType.Float32, (ulong)(200 + i), k, n);
                }
                var c = new float[count * stride];
                Gemm.MultiplyBatched(a, b, c, ldc, stride);
                if (m * n * k < 1 << 20) Assert.Equal(GemmPath.BatchedAcrossEntries, Gemm.BatchedPathFor(a, b));
                for (int i = 0; i < count; i++)
                {
                    var slice = c.AsSpan(i * stride, (m - 1) * ldc + n);
                    if (m * n * k < 1 << 20) AssertClose(a[i], b[i], slice, ldc, $"batch entry {i} of {m}x{n}x{k}");
                    AssertBitsEqual(Multiply(a[i], b[i], ldc), slice.ToArray(), $"batch entry {i} vs alone");
                }
            }
    }

    [Fact]
    public void Forcing_an_unsupported_kernel_throws()
    {
        var unsupported = Enum.GetValues<GemmKernel>().Where(k => !GemmKernelSelector.IsSupported(k)).ToArray();
        foreach (var kernel in unsupported)
        {
            var e = Assert.Throws<NotSupportedException>(() => Gemm.ForceKernel(kernel));
            Assert.Contains(kernel.ToString(), e.Message);
        }
        using (Gemm.ForceKernel(GemmKernel.Scalar)) Assert.Equal(GemmKernel.Scalar, GemmKernelSelector.Current);
        Assert.Equal(GemmKernelSelector.Best, GemmKernelSelector.Current);
    }

    [Fact]
    public void Shape_errors_keep_their_text()
    {
        var a = Random(DType.Float32, 1, 2, 3);
        var b = Random(DType.Float32, 2, 4, 5);
        var e = Assert.Throws<ArgumentException>(() => Gemm.Multiply(a, b, new float[10], 5));
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)", e.Message);
        var b2 = Random(DType.Float32, 2, 3, 5);
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(a, b2, new float[10], 4));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(a, b2, new float[9], 5));
    }

    [Fact]
    public void All_kernels_give_the_same_bits_in_the_blocked_path()
    {
        using var threads = ComputeSettings.UseThreads(2);
        using var mode = ComputeSettings.UseBatchInvariant();
        var a = Random(DType.Float32, 31, 23, 611);
        var b = Random(DType.Float32, 32, 611, 41);
        float[] expected;
        using (Gemm.ForceKernel(GemmKernel.Scalar)) expected = Multiply(a, b);
        foreach (var kernel in new[] { GemmKernel.Avx2, GemmKernel.Avx512 }.Where(GemmKernelSelector.IsSupported))
            using (Gemm.ForceKernel(kernel))
                AssertBitsEqual(expected, Multiply(a, b), $"{kernel} vs scalar");
    }
}
