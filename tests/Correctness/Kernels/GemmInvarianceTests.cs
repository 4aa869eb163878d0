using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Kernels.GemmTestSupport;

namespace Harness.Tests.Correctness.Kernels;

/// <summary>
/// Batch invariance (a row's bits do not depend on M, its position or the thread count) in invariant mode, the
/// normal-mode GEMV path being taken (by its recorded path, not by hoping bits differ), and determinism.
/// </summary>
public class GemmInvarianceTests
{
    private const int Rows = 64;

    [SkippableTheory]
    [InlineData("Scalar")]
    [InlineData("Avx2")]
    [InlineData("Avx512")]
    public void Row_alone_equals_the_same_row_inside_any_batch_at_any_position(string name)
    {
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var mode = ComputeSettings.UseBatchInvariant();
        // Parallelise even tiny products so the M/N partition really changes with M and the thread count.
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        const int n = 19, k = 300; // K above every kernel's KC (several KC blocks); N crosses NR edges.
        var a = Random(DType.Float32, 41, Rows, k);
        var b = Random(DType.Float32, 42, k, n);

        var alone = new float[Rows][];
        using (ComputeSettings.UseThreads(1))
            for (int r = 0; r < Rows; r++) alone[r] = Multiply(a with { Offset = a.Offset + r * a.RowStride, Rows = 1 }, b);

        foreach (int threads in new[] { 1, 2, 3, 4 })
        {
            using var t = ComputeSettings.UseThreads(threads);
            for (int m = 2; m <= Rows; m++)
            {
                // Windows [s, s + m) of A: row r sits at position r - s, so over all s every row takes every position.
                // Large M are sampled (first, last and a middle window) to keep the test fast.
                var starts = m <= 6 ? Enumerable.Range(0, Rows - m + 1) : new[] { 0, (Rows - m) / 2, Rows - m }.Distinct();
                foreach (int s in starts)
                {
                    var window = a with { Offset = a.Offset + s * a.RowStride, Rows = m };
                    var c = Multiply(window, b);
                    Assert.Equal(m <= GemmGemvChain.MaxRows ? GemmPath.GemvChain : GemmPath.Blocked, Gemm.PathFor(window, b));
                    for (int p = 0; p < m; p++)
                        AssertBitsEqual(alone[s + p], c.AsSpan(p * n, n), $"{kernel}, {threads} threads, row {s + p} at position {p} of M={m}");
                }
            }
        }
    }

    [Fact]
    public void Every_row_takes_every_position_for_small_m()
    {
        // Complements the sampled windows above: row 0's content placed at every position of every M up to 64.
        using var mode = ComputeSettings.UseBatchInvariant();
        using var threads = ComputeSettings.UseThreads(2);
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        const int n = 20, k = 270;
        var b = Random(DType.Float32, 52, k, n);
        var filler = Tensor.Uniform(DType.Float32, 51, -1f, 1f, Rows, k);
        var row = Tensor.Uniform(DType.Float32, 53, -1f, 1f, 1, k);
        var alone = Multiply(MatrixView.Of(row), b);
        var data = filler.Storage.As<float>();
        var rowData = row.Storage.As<float>();
        for (int m = 2; m <= Rows; m++)
            for (int p = 0; p < m; p++)
            {
                var copy = data.ToArray();
                rowData.CopyTo(copy.AsSpan(p * k, k));
                var a = MatrixView.Of(Tensor.FromArray(copy, Rows, k)) with { Rows = m };
                var c = Multiply(a, b);
                AssertBitsEqual(alone, c.AsSpan(p * n, n), $"row at position {p} of M={m}");
            }
    }

    [SkippableTheory]
    [InlineData("Scalar")]
    [InlineData("Avx2")]
    [InlineData("Avx512")]
    public void Small_m_gemv_chain_equals_the_blocked_rows_bit_for_bit(string name)
    {
        // Invariant mode computes M <= 4 without packing (GemvChain); its bits must equal the same rows computed by the
        // blocked path inside a larger batch, for both B layouts, fp32 and bf16, K and N crossing the 8/32 SIMD blocks.
        var kernel = Kernel(name);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var mode = ComputeSettings.UseBatchInvariant();
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        const int batchRows = 7;
        ulong seed = 300;
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
            foreach (bool transposed in new[] { false, true })
                foreach (int k in new[] { 1, 7, 8, 9, 300, 1001 })
                    foreach (int n in new[] { 1, 7, 8, 33, 77 })
                    {
                        var b = transposed ? RandomTransposed(dtype, seed++, k, n) : Random(dtype, seed++, k, n);
                        var a = Random(DType.Float32, seed++, batchRows, k);
                        foreach (int threads in new[] { 1, 2, 3, 4 })
                        {
                            using var t = ComputeSettings.UseThreads(threads);
                            var batch = Multiply(a, b);
                            Assert.Equal(GemmPath.Blocked, Gemm.PathFor(a, b));
                            foreach (int m in new[] { 1, 2, 3, 4 })
                                foreach (int s0 in new[] { 0, batchRows - m })
                                {
                                    var rows = a with { Offset = a.Offset + s0 * a.RowStride, Rows = m };
                                    var part = Multiply(rows, b);
                                    Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(rows, b));
                                    AssertBitsEqual(batch.AsSpan(s0 * n, m * n).ToArray(), part,
                                        $"{kernel} {dtype} B^T={transposed} K={k} N={n} rows {s0}..{s0 + m - 1}, {threads} threads");
                                }
                        }
                    }
    }

    [Fact]
    public void Thread_count_does_not_change_bits_in_invariant_mode()
    {
        using var mode = ComputeSettings.UseBatchInvariant();
        var a = Random(DType.Float32, 61, 150, 530);
        var b = RandomTransposed(DType.Float32, 62, 530, 140);
        float[] expected;
        using (ComputeSettings.UseThreads(1)) expected = Multiply(a, b);
        foreach (int threads in new[] { 2, 3, 4 })
            using (ComputeSettings.UseThreads(threads))
                AssertBitsEqual(expected, Multiply(a, b), $"{threads} threads");
    }

    [Fact]
    public void Normal_mode_takes_the_gemv_path_for_one_row_and_invariant_mode_does_not()
    {
        using var threads = ComputeSettings.UseThreads(2);
        const int n = 300, k = 1000;
        var x = Random(DType.Float32, 71, 1, k);
        var wT = RandomTransposed(DType.Float32, 72, k, n); // x @ W^T, W is [N, K]

        float[] fast, invariant;
        using (ComputeSettings.UseBatchInvariant(false))
        {
            fast = Multiply(x, wT);
            Assert.Equal(GemmPath.GemvDot, Gemm.PathFor(x, wT));
        }
        using (ComputeSettings.UseBatchInvariant(true))
        {
            invariant = Multiply(x, wT);
            Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(x, wT));
        }
        AssertClose(x, wT, fast, n, "GEMV path");
        AssertClose(x, wT, invariant, n, "blocked path");

        // Two to four rows take the unpacked chain path (blocked order) in normal mode too; more rows take the blocked path.
        using (ComputeSettings.UseBatchInvariant(false))
        {
            var two = Random(DType.Float32, 73, 2, k);
            AssertClose(two, wT, Multiply(two, wT), n, "two rows");
            Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(two, wT));
            var five = Random(DType.Float32, 74, GemmGemvChain.MaxRows + 1, k);
            Multiply(five, wT);
            Assert.Equal(GemmPath.Blocked, Gemm.PathFor(five, wT));
        }
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(false, 3)]
    [InlineData(true, 2)]
    public void Same_call_twice_gives_identical_bits(bool batchInvariant, int m)
    {
        using var mode = ComputeSettings.UseBatchInvariant(batchInvariant);
        foreach (int threads in new[] { 2, 3 })
        {
            using var t = ComputeSettings.UseThreads(threads);
            var a = Random(DType.Float32, 81, m, 700);
            var b = RandomTransposed(DType.Float32, 82, 700, 513);
            AssertBitsEqual(Multiply(a, b), Multiply(a, b), $"M={m}, {threads} threads, invariant={batchInvariant}");
            var big = Random(DType.Float32, 83, 200, 700);
            AssertBitsEqual(Multiply(big, b), Multiply(big, b), $"M=200, {threads} threads");
        }
    }
}
