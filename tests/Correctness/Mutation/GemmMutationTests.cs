using System.Collections.Concurrent;
using System.Runtime.Intrinsics;
using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Kernels.GemmTestSupport;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The unpacked GEMM (src/Engine/Kernels/Gemm: Gemm.cs, GemmDriver.cs, the three micro-kernels, GemmGemvChain.cs,
/// GemmGemv.cs, GemmPacking.cs, GemmOperand.cs, MatrixView.cs, GemmKernel.cs, GemmThreadPool.cs): what the GEMM unit
/// tests' float64 tolerance cannot see, each a Stryker.NET mutant of the kernels slice (notes/issue-21-mutgemm.md).
/// The engine promises more than closeness: in batch-invariant mode every element is ONE float32 FMA chain over k
/// ascending from zero (the bits depend on K alone), and normal mode's one-row GEMV is a fixed, documented order of
/// partial sums. A mutant that changes the order (a KC block restarted, a chain continued from the wrong value, a
/// partial sum dropped into another) stays within the tolerance but not within those bits, so these tests compare
/// bit for bit against the naive model of each documented order.
/// </summary>
public class GemmMutationTests
{
    public static TheoryData<string> Kernels() => new() { "Avx512", "Avx2", "Scalar" };

    /// <summary>Element (i, j) of a view widened to float32, all of it, row-major.</summary>
    private static float[] Widen(in MatrixView v)
    {
        var f = new float[v.Rows * v.Cols];
        for (int i = 0; i < v.Rows; i++)
            for (int j = 0; j < v.Cols; j++) f[i * v.Cols + j] = v.Get(i, j);
        return f;
    }

    /// <summary>The batch-invariant contract: c[i][j] = fma chain over k = 0..K-1 ascending, from 0.</summary>
    internal static float[] ChainModel(in MatrixView a, in MatrixView b)
    {
        int m = a.Rows, k = a.Cols, n = b.Cols;
        float[] av = Widen(a), bv = Widen(b);
        var c = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0f;
                for (int p = 0; p < k; p++) s = MathF.FusedMultiplyAdd(av[i * k + p], bv[p * n + j], s);
                c[i * n + j] = s;
            }
        return c;
    }

    /// <summary>Sentinel floats past the last row's N columns: a loop one row or column too far writes them.</summary>
    internal const int Tail = 40;

    private static float[] Run(in MatrixView a, in MatrixView b, int ldc, float fill = float.NaN)
    {
        var c = new float[(a.Rows - 1) * ldc + b.Cols + Tail];
        Array.Fill(c, fill);
        Gemm.Multiply(a, b, c, ldc);
        for (int e = c.Length - Tail; e < c.Length; e++)
            Assert.True(float.IsNaN(c[e]), $"C[{e}] past the last row's {b.Cols} columns was written");
        return c;
    }

    private static void AssertRowsBits(float[] expected, float[] c, int m, int n, int ldc, string what)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                if (BitConverter.SingleToUInt32Bits(expected[i * n + j]) != BitConverter.SingleToUInt32Bits(c[i * ldc + j]))
                    Assert.Fail($"{what}: C[{i},{j}] = {c[i * ldc + j]:R}, the FMA chain gives {expected[i * n + j]:R}");
        for (int i = 0; i + 1 < m; i++)
            for (int j = n; j < ldc; j++)
                Assert.True(float.IsNaN(c[i * ldc + j]), $"{what}: C[{i},{j}] in the ldc gap was written");
    }

    [SkippableTheory]
    [MemberData(nameof(Kernels))]
    public void Every_invariant_path_is_one_fma_chain_over_k_ascending_bit_for_bit(string name)
    {
        // mutants: a KC block that restarts the chain or skips k (pc > 0 -> >= 0, pc += KC changed), the edge tile
        // copied back short, an MC or NC block boundary off by one, the chain path's 32/8-column blocks, rows past the
        // last one stored, the K-contiguous 8x8 transpose's tail, a widened bf16 element shifted wrong
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var mode = ComputeSettings.UseBatchInvariant();
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        // K: 1, below and across the 8-wide transpose, above every KC (192 AVX-512, 256 AVX2 and scalar)
        foreach (int k in new[] { 1, 9, 300 })
            foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
                foreach (var (m, n) in new[] { (1, 70), (2, 33), (3, 7), (4, 41), (5, 40), (15, 33), (29, 17) })
                    foreach (bool kContiguous in new[] { false, true })
                        foreach (int threads in new[] { 1, 2 })
                        {
                            using var t = ComputeSettings.UseThreads(threads);
                            var a = Random(dtype, (ulong)(k * 7 + m), m, k);
                            var b = kContiguous ? RandomTransposed(dtype, (ulong)(k + n), k, n) : Random(dtype, (ulong)(k + n), k, n);
                            int ldc = n + 3;
                            AssertRowsBits(ChainModel(a, b), Run(a, b, ldc), m, n, ldc,
                                $"{kernel} {dtype.TorchName()} M={m} K={k} N={n} {(kContiguous ? "B K-contiguous" : "B row-major")} threads={threads} ({Gemm.PathFor(a, b)})");
                        }
    }

    [SkippableTheory]
    [MemberData(nameof(Kernels))]
    public void Blocks_past_mc_and_nc_and_odd_operands_keep_the_chain(string name)
    {
        // mutants: the MC loop (M above MC: 168, 144, 64 rows), the NC loop (N above NC: 4096, 4096, 2048 columns), the
        // strided packing branches (A transposed, A with a negative row stride, B with neither stride 1, fp16 widened),
        // the chain path's column split over threads (N = 130: two tasks, the second starting at column 64)
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var mode = ComputeSettings.UseBatchInvariant();
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        using var threads = ComputeSettings.UseThreads(2);
        int nc = kernel == GemmKernel.Scalar ? 2048 : 4096, mc = kernel switch { GemmKernel.Avx512 => 168, GemmKernel.Avx2 => 144, _ => 64 };
        var cases = new List<(MatrixView A, MatrixView B, string What)>
        {
            (Random(DType.Float32, 1, 5, 3), Random(DType.Float32, 2, 3, nc + 1), "N past NC"),
            (Random(DType.Float32, 3, mc + 5, 20), Random(DType.Float32, 4, 20, 9), "M past MC"),
            (RandomTransposed(DType.Float16, 5, 11, 23), Random(DType.Float16, 6, 23, 19), "fp16, A transposed"),
            (Random(DType.BFloat16, 7, 3, 40), MatrixView.Of(Tensor.Uniform(DType.BFloat16, 8, -1f, 1f, 40, 2 * 21).Narrow(1, 0, 41)) with { Cols = 21, ColStride = 2 }, "B with column stride 2 (no stride 1: blocked)"),
            (Random(DType.Float32, 9, 2, 50), Random(DType.Float32, 10, 50, 130), "two chain tasks"),
            (Random(DType.BFloat16, 11, 1, 50), RandomTransposed(DType.BFloat16, 12, 50, 130), "two chain tasks, K-contiguous"),
        };
        var flipped = Tensor.Uniform(DType.Float32, 13, -1f, 1f, 7, 30);
        cases.Add((new MatrixView(flipped.Storage, DType.Float32, 6 * 30, 7, 30, -30, 1), Random(DType.Float32, 14, 30, 12), "A rows in reverse (row stride -30)"));
        cases.Add((new MatrixView(flipped.Storage, DType.Float32, 29, 7, 30, 30, -1), Random(DType.Float32, 15, 30, 12), "A columns in reverse (column stride -1)"));
        foreach (var (a, b, what) in cases)
        {
            int ldc = b.Cols + 1;
            AssertRowsBits(ChainModel(a, b), Run(a, b, ldc), a.Rows, b.Cols, ldc, $"{kernel} {what} ({Gemm.PathFor(a, b)})");
        }
    }

    // ---- normal mode's one-row GEMV: the documented partial-sum orders ----

    private static float Dot512Model(float[] x, float[] y, int k)
    {
        var s0 = Vector512<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
        int i = 0;
        for (; i + 64 <= k; i += 64)
        {
            s0 = Vector512.FusedMultiplyAdd(Vector512.Create(x.AsSpan(i, 16)), Vector512.Create(y.AsSpan(i, 16)), s0);
            s1 = Vector512.FusedMultiplyAdd(Vector512.Create(x.AsSpan(i + 16, 16)), Vector512.Create(y.AsSpan(i + 16, 16)), s1);
            s2 = Vector512.FusedMultiplyAdd(Vector512.Create(x.AsSpan(i + 32, 16)), Vector512.Create(y.AsSpan(i + 32, 16)), s2);
            s3 = Vector512.FusedMultiplyAdd(Vector512.Create(x.AsSpan(i + 48, 16)), Vector512.Create(y.AsSpan(i + 48, 16)), s3);
        }
        for (; i + 16 <= k; i += 16) s0 = Vector512.FusedMultiplyAdd(Vector512.Create(x.AsSpan(i, 16)), Vector512.Create(y.AsSpan(i, 16)), s0);
        float sum = Vector512.Sum((s0 + s1) + (s2 + s3));
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], y[i], sum);
        return sum;
    }

    private static float Dot256Model(float[] x, float[] y, int k)
    {
        var s0 = Vector256<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
        int i = 0;
        for (; i + 32 <= k; i += 32)
        {
            s0 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i, 8)), Vector256.Create(y.AsSpan(i, 8)), s0);
            s1 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i + 8, 8)), Vector256.Create(y.AsSpan(i + 8, 8)), s1);
            s2 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i + 16, 8)), Vector256.Create(y.AsSpan(i + 16, 8)), s2);
            s3 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i + 24, 8)), Vector256.Create(y.AsSpan(i + 24, 8)), s3);
        }
        for (; i + 8 <= k; i += 8) s0 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i, 8)), Vector256.Create(y.AsSpan(i, 8)), s0);
        float sum = Vector256.Sum((s0 + s1) + (s2 + s3));
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], y[i], sum);
        return sum;
    }

    /// <summary>Four columns at once: per column, s0 over the even 8-blocks and s1 over the odd ones, then Sum(s0 + s1), then the tail.</summary>
    private static float Dot256x4Model(float[] x, float[] y, int k)
    {
        var a0 = Vector256<float>.Zero; var a1 = a0;
        int i = 0;
        for (; i + 16 <= k; i += 16)
        {
            a0 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i, 8)), Vector256.Create(y.AsSpan(i, 8)), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i + 8, 8)), Vector256.Create(y.AsSpan(i + 8, 8)), a1);
        }
        if (i + 8 <= k)
        {
            a0 = Vector256.FusedMultiplyAdd(Vector256.Create(x.AsSpan(i, 8)), Vector256.Create(y.AsSpan(i, 8)), a0);
            i += 8;
        }
        float sum = Vector256.Sum(a0 + a1);
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], y[i], sum);
        return sum;
    }

    private static float DotScalarModel(float[] x, float[] y, int k)
    {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= k; i += 4)
        {
            s0 = MathF.FusedMultiplyAdd(x[i], y[i], s0);
            s1 = MathF.FusedMultiplyAdd(x[i + 1], y[i + 1], s1);
            s2 = MathF.FusedMultiplyAdd(x[i + 2], y[i + 2], s2);
            s3 = MathF.FusedMultiplyAdd(x[i + 3], y[i + 3], s3);
        }
        float sum = (s0 + s1) + (s2 + s3);
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], y[i], sum);
        return sum;
    }

    [SkippableTheory]
    [MemberData(nameof(Kernels))]
    public void Normal_mode_one_row_gemv_is_its_documented_partial_sum_order_bit_for_bit(string name)
    {
        // mutants: a 64/32/16/8-wide block bound (< for <=, a block handled by the wrong partial sum), the pairwise
        // reduction regrouped, the scalar tail started from 0, the AVX2 kernel's four-column groups (which columns take
        // Dot256x4 and which the one-column Dot256 depends on the thread's column range: threads split N from j0),
        // a bf16 column widened wrong, the column stride of a strided B
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var mode = ComputeSettings.UseBatchInvariant(false);
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
            foreach (int k in new[] { 32, 40, 57, 64, 85, 128, 200 })
                foreach (int n in new[] { 1, 7, 130 })
                    foreach (int threads in new[] { 1, 2 })
                    {
                        using var t = ComputeSettings.UseThreads(threads);
                        var a = Random(dtype, (ulong)(k + 1), 1, k);
                        // B = W^T of a [n, k + 3] weight's first k columns: K-contiguous, column stride k + 3
                        var wt = Tensor.Uniform(dtype, (ulong)(k * 3 + n), -1f, 1f, n, k + 3);
                        var b = MatrixView.Of(wt.Narrow(1, 0, k).T());
                        Assert.Equal(GemmPath.GemvDot, Gemm.PathFor(a, b));
                        float[] x = Widen(a), bv = Widen(b);
                        // threshold 0: threads split N into clamp(N / 64, 1, threads) column ranges
                        int tasks = Math.Clamp(n / 64, 1, threads);
                        var expected = new float[n];
                        float[] Col(int jj) { var y = new float[k]; for (int p = 0; p < k; p++) y[p] = bv[p * n + jj]; return y; }
                        for (int task = 0; task < tasks; task++)
                        {
                            int j0 = (int)((long)n * task / tasks), j1 = (int)((long)n * (task + 1) / tasks), j = j0;
                            if (kernel == GemmKernel.Avx2)
                                for (; j + 4 <= j1; j += 4)
                                    for (int q = 0; q < 4; q++) expected[j + q] = Dot256x4Model(x, Col(j + q), k);
                            for (; j < j1; j++)
                                expected[j] = kernel switch
                                {
                                    GemmKernel.Avx512 => Dot512Model(x, Col(j), k),
                                    GemmKernel.Avx2 => Dot256Model(x, Col(j), k),
                                    _ => DotScalarModel(x, Col(j), k),
                                };
                        }
                        var c = Run(a, b, n);
                        AssertBitsEqual(expected, c.AsSpan(0, n).ToArray(), $"{kernel} {dtype.TorchName()} K={k} N={n} threads={threads}");
                    }
    }

    // ---- paths, edges and refusals ----

    [Fact]
    public void The_path_is_chosen_by_rows_k_layout_dtype_and_mode()
    {
        // mutants: GemmGemv.Applies' K >= 32 and its dtype test, GemmGemvChain.Applies' 1..4 rows and layouts, PathOf's mode
        var wT = MatrixView.Of(Tensor.Uniform(DType.Float32, 2, -1f, 1f, 48, 64).T());   // [64, 48], K-contiguous
        var rowMajor = Random(DType.Float32, 3, 64, 48);
        MatrixView X(int m, int k = 64, DType d = DType.Float32) => Random(d, 4, m, k);
        using (ComputeSettings.UseBatchInvariant(false))
        {
            Assert.Equal(GemmPath.GemvDot, Gemm.PathFor(X(1), wT));
            Assert.Equal(GemmPath.GemvDot, Gemm.PathFor(X(1, 32), MatrixView.Of(Tensor.Uniform(DType.BFloat16, 5, -1f, 1f, 48, 32).T())));
            Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(X(1, 31), MatrixView.Of(Tensor.Uniform(DType.Float32, 5, -1f, 1f, 48, 31).T())));
            Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(X(1), rowMajor));
            Assert.Equal(GemmPath.Blocked, Gemm.PathFor(X(1), MatrixView.Of(Tensor.Uniform(DType.Float16, 6, -1f, 1f, 48, 64).T())));
            Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(X(4), wT));
            Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(X(2), rowMajor));
            Assert.Equal(GemmPath.Blocked, Gemm.PathFor(X(5), wT));
            Assert.Equal(GemmPath.Blocked, Gemm.PathFor(X(3), Random(DType.Float16, 7, 64, 48)));
            var strided = MatrixView.Of(Tensor.Uniform(DType.Float32, 8, -1f, 1f, 64, 96)) with { Cols = 48, ColStride = 2 };
            Assert.Equal(GemmPath.Blocked, Gemm.PathFor(X(1), strided));
            Assert.Equal(GemmPath.None, Gemm.PathFor(X(1), rowMajor with { Cols = 0 }));
        }
        using (ComputeSettings.UseBatchInvariant(true))
        {
            Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(X(1), wT));
            Assert.Equal(GemmPath.Blocked, Gemm.PathFor(X(5), rowMajor));
        }
        // K = 0: no chain (nothing to reduce), the blocked path writes zeros
        var empty = Random(DType.Float32, 9, 3, 0);
        Assert.Equal(GemmPath.Blocked, Gemm.PathFor(empty, Random(DType.Float32, 10, 0, 5)));
    }

    [SkippableTheory]
    [MemberData(nameof(Kernels))]
    public void An_empty_k_writes_zeros_and_empty_m_or_n_write_nothing(string name)
    {
        // mutants: the driver's K == 0 clear removed or short (C keeps its old values), M == 0 or N == 0 not returning
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        foreach (bool invariant in new[] { false, true })
        {
            using var mode = ComputeSettings.UseBatchInvariant(invariant);
            foreach (int m in new[] { 1, 3, 20 })
            {
                var c = Run(Random(DType.Float32, 1, m, 0), Random(DType.Float32, 2, 0, 37), 40);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < 40 && i * 40 + j < c.Length - Tail; j++)
                        Assert.Equal(j < 37 ? 0f : float.NaN, c[i * 40 + j]);
            }
            var untouched = new float[] { 7f, 7f };
            Gemm.Multiply(Random(DType.Float32, 3, 0, 4), Random(DType.Float32, 4, 4, 2), untouched, 2);
            Gemm.Multiply(Random(DType.Float32, 3, 1, 4), Random(DType.Float32, 4, 4, 0), untouched, 2);
            Assert.Equal(new[] { 7f, 7f }, untouched);
        }
    }

    [Fact]
    public void Batched_products_refuse_mismatched_counts_and_short_outputs_and_choose_their_path()
    {
        // mutants: the count check, each entry's offset in the output check, the across-entries rule (more than one
        // product, more than one thread, each below 256^3), an empty entry skipped, an empty batch returning
        var a = new[] { Random(DType.Float32, 1, 2, 3), Random(DType.Float32, 2, 2, 3) };
        var b = new[] { Random(DType.Float32, 3, 3, 4), Random(DType.Float32, 4, 3, 4) };
        Assert.Equal("batched GEMM got 2 A operands and 1 B operands",
            Assert.Throws<ArgumentException>(() => Gemm.MultiplyBatched(a, b.AsSpan(0, 1), new float[16], 4, 8)).Message);
        Assert.Equal("output of 14 floats cannot hold a 2x4 result at offset 7 with ldc 4",
            Assert.Throws<ArgumentException>(() => Gemm.MultiplyBatched(a, b, new float[14], 4, 7)).Message);
        Assert.Equal("ldc 3 is smaller than N 4", Assert.Throws<ArgumentException>(() => Gemm.MultiplyBatched(a, b, new float[40], 3, 8)).Message);
        var fits = new float[15];   // entry 1 at 7: rows at 7 and 11, last element 14
        Gemm.MultiplyBatched(a, b, fits, 4, 7);
        Gemm.MultiplyBatched(ReadOnlySpan<MatrixView>.Empty, ReadOnlySpan<MatrixView>.Empty, Span<float>.Empty, 1, 0);
        using (ComputeSettings.UseThreads(2))
        {
            Assert.Equal(GemmPath.BatchedAcrossEntries, Gemm.BatchedPathFor(a, b));
            Assert.Equal(GemmPath.GemvChain, Gemm.BatchedPathFor(a.AsSpan(0, 1), b.AsSpan(0, 1)));
            var big = new[] { Random(DType.Float32, 5, 256, 256), Random(DType.Float32, 6, 1, 256) };
            var bigB = new[] { Random(DType.Float32, 7, 256, 256), Random(DType.Float32, 8, 256, 256) };
            using (ComputeSettings.UseBatchInvariant(true)) Assert.Equal(GemmPath.GemvChain, Gemm.BatchedPathFor(big, bigB));
        }
        using (ComputeSettings.UseThreads(1))
        {
            Assert.Equal(GemmPath.GemvChain, Gemm.BatchedPathFor(a, b));
            // the path of the last non-empty product (an empty last entry takes none)
            var withEmpty = new[] { Random(DType.Float32, 9, 5, 3), Random(DType.Float32, 10, 0, 3) };
            Assert.Equal(GemmPath.Blocked, Gemm.BatchedPathFor(withEmpty, b));
        }
        // an empty entry among others: its output is not written, the others are
        foreach (int threads in new[] { 1, 2 })
            {
                using var t = ComputeSettings.UseThreads(threads);
                var ea = new[] { Random(DType.Float32, 11, 2, 3), Random(DType.Float32, 12, 0, 3), Random(DType.Float32, 13, 2, 3) };
                var eb = new[] { Random(DType.Float32, 14, 3, 4), Random(DType.Float32, 15, 3, 4), Random(DType.Float32, 16, 3, 4) };
                var c = new float[24];
                Array.Fill(c, float.NaN);
                Gemm.MultiplyBatched(ea, eb, c, 4, 8);
                AssertBitsEqual(Multiply(ea[0], eb[0]), c.AsSpan(0, 8).ToArray(), "entry 0");
                Assert.All(c.AsSpan(8, 8).ToArray(), v => Assert.True(float.IsNaN(v)));
                AssertBitsEqual(Multiply(ea[2], eb[2]), c.AsSpan(16, 8).ToArray(), "entry 2");
            }
    }

    [Fact]
    public void An_operand_outside_its_storage_or_of_another_dtype_is_refused_naming_it()
    {
        // mutants: GemmOperand.Pin's extent (negative strides reach below the offset, the last element's index is
        // capacity - 1), its messages, MatrixView.Of's rank check, Get's dtypes, ElementSize's refusal
        var t = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 4, 5);   // 20 elements
        var ok = new MatrixView(t.Storage, DType.Float32, 0, 4, 5, 5, 1);
        var b = Random(DType.Float32, 2, 5, 2);
        Gemm.Multiply(ok, b, new float[8], 2);
        Gemm.Multiply(new MatrixView(t.Storage, DType.Float32, 15, 4, 5, -5, 1), b, new float[8], 2);   // lo = 0
        Assert.Equal("GEMM operand 4x5 (strides 5, 1, offset 1) reaches elements [1, 20] outside a storage of 20 elements",
            Assert.Throws<ArgumentException>(() => Gemm.Multiply(ok with { Offset = 1 }, b, new float[8], 2)).Message);
        Assert.Equal("GEMM operand 4x5 (strides -5, 1, offset 14) reaches elements [-1, 18] outside a storage of 20 elements",
            Assert.Throws<ArgumentException>(() => Gemm.Multiply(new MatrixView(t.Storage, DType.Float32, 14, 4, 5, -5, 1), b, new float[8], 2)).Message);
        Assert.Equal("GEMM operand 4x5 (strides 5, -1, offset 3) reaches elements [-1, 18] outside a storage of 20 elements",
            Assert.Throws<ArgumentException>(() => Gemm.Multiply(new MatrixView(t.Storage, DType.Float32, 3, 4, 5, 5, -1), b, new float[8], 2)).Message);
        Assert.Equal("GEMM operand has a negative shape -1x5",
            Assert.Throws<ArgumentException>(() => Gemm.PathFor(ok with { Rows = -1 }, b)).Message);
        Assert.Equal("GEMM operand has a negative shape 5x-2",
            Assert.Throws<ArgumentException>(() => Gemm.PathFor(ok, b with { Cols = -2 })).Message);
        // an empty view may name no element at all (offset past the storage)
        Assert.Equal(GemmPath.None, Gemm.PathFor(ok with { Rows = 0, Offset = 99 }, b));
        Gemm.Multiply(ok with { Cols = 0, Offset = 99 }, b with { Rows = 0 }, new float[8], 2);
        Assert.Equal($"MatrixView.Of expects a 2D tensor, got shape {Shape.Format([2, 2, 5])}",
            Assert.Throws<ArgumentException>(() => MatrixView.Of(t.Reshape(2, 2, 5))).Message);
        Assert.Equal($"GEMM operands must be float32, bfloat16 or float16, got {DType.Int32.TorchName()}",
            Assert.Throws<NotSupportedException>(() => new MatrixView(Tensor.Zeros(DType.Int32, 2, 2).Storage, DType.Int32, 0, 2, 2, 2, 1).Get(0, 0)).Message);
        Assert.Equal($"GEMM operands must be float32, bfloat16 or float16, got {DType.Int64.TorchName()}",
            Assert.Throws<NotSupportedException>(() => GemmOperand.ElementSize(DType.Int64)).Message);
        Assert.Equal(4, GemmOperand.ElementSize(DType.Float32));
        Assert.Equal(2, GemmOperand.ElementSize(DType.BFloat16));
        Assert.Equal(2, GemmOperand.ElementSize(DType.Float16));
        // Get widens each dtype exactly, at offset + i * rowStride + j * colStride
        var h = Tensor.FromArray(new[] { (Half)1.5f, (Half)(-2f), (Half)0.25f, (Half)3f }, 2, 2);
        Assert.Equal(0.25f, new MatrixView(h.Storage, DType.Float16, 0, 2, 2, 1, 2).Get(0, 1));
        var bf = Tensor.FromArray(new[] { 1f, -3f, 0.5f, 6f }, 2, 2).To(DType.BFloat16);
        Assert.Equal(6f, MatrixView.Of(bf).Get(1, 1));
        Assert.Equal(-3f, MatrixView.Of(Tensor.FromArray(new[] { 1f, -3f, 0.5f, 6f }, 2, 2)) .Get(0, 1));
    }

    [Fact]
    public void Kernel_selection_parses_forces_restores_and_names_its_kernels()
    {
        // mutants: Parse's blank and case-insensitive forms and its message, IsSupported of an unknown value, Force's
        // message, a Restore disposed twice overwriting a later scope, Auto forced meaning the best, the kernel names
        Assert.Null(GemmKernelSelector.Parse(null));
        Assert.Null(GemmKernelSelector.Parse("  "));
        Assert.Equal(GemmKernel.Avx2, GemmKernelSelector.Parse("AVX2"));
        Assert.Equal(GemmKernel.Auto, GemmKernelSelector.Parse("auto"));
        Assert.Equal("HARNESS_GEMM_KERNEL=avx9 is not a GEMM kernel; known: Auto, Scalar, Avx2, Avx512",
            Assert.Throws<ArgumentException>(() => GemmKernelSelector.Parse("avx9")).Message);
        Assert.False(GemmKernelSelector.IsSupported((GemmKernel)42));
        Assert.True(GemmKernelSelector.IsSupported(GemmKernel.Auto));
        Assert.Equal($"GEMM kernel 42 is not supported on this CPU (best available: {GemmKernelSelector.Best}); it needs AVX2 and FMA",
            Assert.Throws<NotSupportedException>(() => Gemm.ForceKernel((GemmKernel)42)).Message);
        var expectedBest = System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? GemmKernel.Avx512
            : System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported ? GemmKernel.Avx2 : GemmKernel.Scalar;
        Assert.Equal(expectedBest, GemmKernelSelector.Best);
        Assert.Equal(new[] { GemmKernel.Scalar, GemmKernel.Avx2, GemmKernel.Avx512 }.Where(GemmKernelSelector.IsSupported), Gemm.SupportedKernels);
        var outer = Gemm.ForceKernel(GemmKernel.Scalar);
        Assert.Equal("scalar 4x8", Gemm.KernelName);
        using (Gemm.ForceKernel(GemmKernel.Auto)) Assert.Equal(GemmKernelSelector.Best, GemmKernelSelector.Current);
        outer.Dispose();
        var later = Gemm.ForceKernel(GemmKernel.Scalar);
        outer.Dispose();   // a second Dispose of an old scope leaves the later one in force
        Assert.Equal(GemmKernel.Scalar, GemmKernelSelector.Current);
        later.Dispose();
        Assert.Equal(GemmKernelSelector.Best, GemmKernelSelector.Current);
        if (GemmKernelSelector.IsSupported(GemmKernel.Avx2))
            using (Gemm.ForceKernel(GemmKernel.Avx2)) Assert.Equal("avx2-fma 6x16", Gemm.KernelName);
        if (GemmKernelSelector.IsSupported(GemmKernel.Avx512))
            using (Gemm.ForceKernel(GemmKernel.Avx512)) Assert.Equal("avx512f 14x32", Gemm.KernelName);
        Assert.Equal((14, 32), GemmDriver.TileOf(GemmKernel.Avx512));
        Assert.Equal((6, 16), GemmDriver.TileOf(GemmKernel.Avx2));
        Assert.Equal((4, 8), GemmDriver.TileOf(GemmKernel.Scalar));
    }

    [Fact]
    public unsafe void The_driver_refuses_an_unresolved_kernel()
    {
        // mutant: RunRegion's default arm (Auto reaching the driver) removed or its message emptied
        var a = Random(DType.Float32, 1, 2, 2);
        var pa = GemmOperand.Pin(a, out var ha);
        using (ha)
        {
            var c = new float[4];
            string? message = null;
            fixed (float* pc = c)
            {
                try { GemmDriver.RunRegion(GemmKernel.Auto, pa, pa, pc, 2, 0, 2, 0, 2); }
                catch (InvalidOperationException e) { message = e.Message; }
            }
            Assert.Equal("unresolved GEMM kernel Auto", message);
        }
    }

    private sealed class RecordingJob(Action<int> body) : GemmJob
    {
        public override void Execute(int task) => body(task);
    }

    [Fact]
    public void The_thread_pool_runs_every_task_once_waits_for_all_and_rethrows_a_tasks_failure()
    {
        // mutants: tasks <= 1 run inline (0 runs nothing), the workers added or started short, the done event not
        // reset or not waited for, the remaining count, a task's exception lost (caller's or a worker's), the job left
        // set after a failure, a nested Run (a GEMM inside a task) not falling back to Parallel.For
        var pool = GemmThreadPool.Shared;
        foreach (int tasks in new[] { 0, 1, 2, 3, 5 })
        {
            var ran = new ConcurrentBag<int>();
            pool.Run(new RecordingJob(t => { Thread.Sleep(t == 0 ? 0 : 20); ran.Add(t); }), tasks);
            Assert.Equal(Enumerable.Range(0, tasks), ran.OrderBy(t => t));
        }
        foreach (int failing in new[] { 0, 2 })
        {
            var e = Assert.Throws<InvalidDataException>(() => pool.Run(new RecordingJob(t => { if (t == failing) throw new InvalidDataException($"task {t}"); }), 3));
            Assert.Equal($"task {failing}", e.Message);
            var after = new ConcurrentBag<int>();
            pool.Run(new RecordingJob(after.Add), 3);
            Assert.Equal(new[] { 0, 1, 2 }, after.OrderBy(t => t));
        }
        var nested = new ConcurrentBag<(int, int)>();
        pool.Run(new RecordingJob(outer => pool.Run(new RecordingJob(inner => nested.Add((outer, inner))), 2)), 2);
        Assert.Equal(new[] { (0, 0), (0, 1), (1, 0), (1, 1) }, nested.OrderBy(p => p));
    }

    [Fact]
    public unsafe void Scratch_buffers_are_rounded_up_once_and_reused_for_any_request_they_hold()
    {
        // mutants: Ensure's round-up (max(request, 1024) + 64 floats: a buffer 64 short of its length, or no minimum)
        // and its reuse test; a new buffer each call would cost an allocation per GEMM, a short one overruns
        Exception? failure = null;
        var thread = new Thread(() => { try { RunScratch(); } catch (Exception e) { failure = e; } });
        thread.Start();
        thread.Join();
        Assert.Null(failure);

        static void RunScratch()
        {
            var scratch = GemmScratch.Current;
            Assert.Same(scratch, GemmScratch.Current);
            float* a = scratch.A(10);
            Assert.True(a == scratch.A(1088), "a request of 10 floats holds max(10, 1024) + 64");
            float* b = scratch.B(5000);
            Assert.True(b == scratch.B(5064), "a request of 5000 floats holds 5064");
            float* r = scratch.Row(2000);
            Assert.True(r == scratch.Row(1), "a smaller request keeps the buffer");
            Assert.True(r == scratch.Row(2064));
        }
    }
}
