using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Bench;

/// <summary>
/// `harness check-kernels`: runs every GEMM micro-kernel this CPU supports against a float64 reference (tile-crossing
/// shapes, fp32 and bf16 inputs, transposed B) and checks batch invariance (each row alone equals the same row inside
/// batches of 2..64 at every position, threads 1..4). For machines the test suite does not run on (a GPU runner's CPU
/// with AVX-512, say). Exit code 1 on any failure.
/// </summary>
public static class KernelSelfCheck
{
    private static readonly (int M, int N, int K)[] Shapes =
        [(1, 1, 1), (7, 13, 129), (129, 17, 257), (64, 37, 300), (14, 32, 192), (15, 33, 385), (3, 100, 1000)];

    public static int Run()
    {
        Console.WriteLine($"CPU kernels supported: {string.Join(", ", Gemm.SupportedKernels)}; auto picks {Gemm.KernelName}");
        int failures = 0;
        foreach (var kernel in Gemm.SupportedKernels)
        {
            using var force = Gemm.ForceKernel(kernel);
            foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
                foreach (var (m, n, k) in Shapes)
                    foreach (bool transposeB in new[] { false, true })
                        failures += Report($"{kernel,-7} {dtype.TorchName(),-8} {m}x{k} by {k}x{n}{(transposeB ? " (B^T)" : "")}",
                            CheckAccuracy(m, n, k, dtype, transposeB));
            foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
                failures += Report($"{kernel,-7} {dtype.TorchName(),-8} batch invariance, batches 2..64, threads 1..4", CheckInvariance(dtype));
            foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
                failures += Report($"{kernel,-7} {dtype.TorchName(),-8} packed Linear weight = unpacked invariant GEMM, bit for bit", PackedSelfCheck.PackedEqualsUnpacked(dtype));
        }
        var native = PackedSelfCheck.NativeBf16EqualsModel(out bool ran);
        if (ran) failures += Report("native bf16 (vdpbf16ps, emitted) = its scalar model, bit for bit", native);
        else Console.WriteLine($"SKIP native bf16 (vdpbf16ps): {Gemm.NativeBf16UnsupportedReason}");
        Console.WriteLine(failures == 0 ? "all kernel checks passed" : $"{failures} kernel checks FAILED");
        return failures == 0 ? 0 : 1;
    }

    private static int Report(string what, string? error)
    {
        Console.WriteLine($"{(error is null ? "PASS" : "FAIL")} {what}{(error is null ? "" : ": " + error)}");
        return error is null ? 0 : 1;
    }

    // |c - ref| <= (K + 2) * 2^-23 * sum |a||b|: a bound that holds for any summation order in float32.
    private static string? CheckAccuracy(int m, int n, int k, DType dtype, bool transposeB)
    {
        var a = Tensor.Normal(dtype, 1, 0, 1, m, k);
        var b = transposeB ? Tensor.Normal(dtype, 2, 0, 1, n, k).T() : Tensor.Normal(dtype, 2, 0, 1, k, n);
        var c = new float[m * n];
        Gemm.Multiply(MatrixView.Of(a), MatrixView.Of(b), c, n);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = 0, abs = 0;
                for (int p = 0; p < k; p++)
                {
                    double prod = a.At(i, p) * b.At(p, j);
                    sum += prod;
                    abs += Math.Abs(prod);
                }
                double bound = (k + 2) * Math.Pow(2, -23) * abs;
                if (Math.Abs(c[i * n + j] - sum) > bound)
                    return $"C[{i}, {j}] = {c[i * n + j]}, float64 reference {sum}, error {Math.Abs(c[i * n + j] - sum):E3} > bound {bound:E3}";
            }
        return null;
    }

    private static string? CheckInvariance(DType dtype)
    {
        const int k = 300, n = 37, pool = 64;
        using var invariant = ComputeSettings.UseBatchInvariant();
        var rows = Tensor.Normal(dtype, 3, 0, 1, pool, k);
        var w = Tensor.Normal(dtype, 4, 0, 1, k, n);
        var alone = new float[pool][];
        using (ComputeSettings.UseThreads(1))
            for (int r = 0; r < pool; r++)
            {
                alone[r] = new float[n];
                Gemm.Multiply(MatrixView.Of(rows.Narrow(0, r, 1)), MatrixView.Of(w), alone[r], n);
            }
        for (int batch = 2; batch <= pool; batch++)
        {
            using var threads = ComputeSettings.UseThreads(1 + batch % 4);
            for (int shift = 0; shift < batch; shift += Math.Max(1, batch / 4))
            {
                var order = Enumerable.Range(0, batch).Select(p => (p + shift + batch) % pool).ToArray();
                var input = rows.IndexSelect(0, Tensor.FromArray(order.Select(o => (long)o).ToArray()));
                var c = new float[batch * n];
                Gemm.Multiply(MatrixView.Of(input), MatrixView.Of(w), c, n);
                for (int p = 0; p < batch; p++)
                    if (!c.AsSpan(p * n, n).SequenceEqual(alone[order[p]]))
                        return $"row {order[p]} at position {p} of a batch of {batch} ({ComputeSettings.Threads} threads) differs from the row alone";
            }
        }
        return null;
    }
}
