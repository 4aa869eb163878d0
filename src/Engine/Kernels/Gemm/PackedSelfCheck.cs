using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// The packed-weight checks `harness check-kernels` runs on machines the test suite does not run on (the tests in
/// tests/Correctness/Kernels/PackedLinearTests.cs are the same checks): for the current micro-kernel, the packed product
/// equals the unpacked batch-invariant GEMM bit for bit (float32 and bf16 widened; skinny and blocked; odd K; 1 and 2
/// threads), and where the CPU has AVX512_BF16 the emitted vdpbf16ps kernel equals its scalar model bit for bit.
/// </summary>
public static class PackedSelfCheck
{
    private static readonly int[] Ks = [7, 385];
    private static readonly int[] Ns = [33, 100];
    private static readonly int[] Ms = [1, 3, 8, 9, 40];

    /// <summary>Null when every product of <paramref name="dtype"/> matches, else the first mismatch.</summary>
    public static string? PackedEqualsUnpacked(DType dtype)
    {
        var kernel = GemmKernelSelector.Current;
        using var widen = Bf16DotKernel.IsSupported ? Bf16DotKernel.Force(false) : null;
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        foreach (int k in Ks)
            foreach (int n in Ns)
            {
                var w = Tensor.Normal(dtype, (ulong)(k + n), 0, 1, n, k);
                var x = Tensor.Normal(dtype, (ulong)(k * n), 0, 1, Ms[^1], k);
                var packed = PackedWeight.Pack(w, kernel);
                foreach (int m in Ms)
                {
                    var rows = MatrixView.Of(x.Narrow(0, 0, m));
                    var expected = new float[m * n];
                    using (ComputeSettings.UseBatchInvariant()) Gemm.Multiply(rows, MatrixView.Of(w.T()), expected, n);
                    foreach (int threads in new[] { 1, 2 })
                    {
                        using var t = ComputeSettings.UseThreads(threads);
                        var c = new float[m * n];
                        Gemm.MultiplyPacked(rows, packed, c, n);
                        if (FirstDifference(expected, c) is int i)
                            return $"M={m} K={k} N={n} threads {threads} ({PackedGemm.PathFor(packed, m)}): C[{i / n},{i % n}] = {c[i]:R}, unpacked {expected[i]:R}";
                    }
                }
            }
        return null;
    }

    /// <summary>Null when the native kernel equals its model on every product (or with the reason it cannot run here).</summary>
    public static string? NativeBf16EqualsModel(out bool ran)
    {
        ran = Bf16DotKernel.IsSupported;
        if (!ran) return null;
        using var native = Bf16DotKernel.Force(true);
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        foreach (int k in Ks)
            foreach (int n in Ns)
            {
                var w = Tensor.Normal(DType.BFloat16, (ulong)(k + 2 * n), 0, 1, n, k);
                var x = Tensor.Normal(DType.BFloat16, (ulong)(k * 3 + n), 0, 1, Ms[^1], k);
                var packed = PackedWeight.Pack(w, GemmKernel.Avx512);
                foreach (int m in Ms)
                {
                    var c = new float[m * n];
                    Gemm.MultiplyPacked(MatrixView.Of(x.Narrow(0, 0, m)), packed, c, n);
                    var want = Bf16DotKernel.NaiveProduct(x, w, m);
                    for (int e = 0; e < c.Length; e++)
                        if (BitConverter.SingleToUInt32Bits(want[e]) != BitConverter.SingleToUInt32Bits(c[e]))
                            return $"M={m} K={k} N={n} ({PackedGemm.PathFor(packed, m)}): C[{e / n},{e % n}] = {c[e]:R}, vdpbf16ps model {want[e]:R}";
                }
            }
        return null;
    }

    private static int? FirstDifference(float[] a, float[] b)
    {
        for (int i = 0; i < a.Length; i++)
            if (BitConverter.SingleToUInt32Bits(a[i]) != BitConverter.SingleToUInt32Bits(b[i])) return i;
        return null;
    }
}
