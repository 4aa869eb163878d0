using System.Diagnostics;
using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Bench;

/// <summary>
/// `harness bench`: fp32 GEMM throughput (GFLOP/s = 2*M*N*K / best time) for square sizes and the decode shape
/// x[1, 4096] x W^T (W a [4096, 4096] weight, so B is contiguous along K), in normal and batch-invariant mode.
/// Warmup (2 calls), then best of N runs, N chosen so each cell takes about 1.5 s (best-of filters out
/// time stolen by other processes on a shared machine). Beside each row, torch.matmul (OpenBLAS here) measured by the
/// reference worker in the same run, same shape, same thread count, and the ratio ours/torch (normal mode).
/// Options: --threads N, --sizes 256,512, --no-decode, --no-reference; --linear [--m 1,8,64] prints the linear-layer table
/// instead (<see cref="LinearBenchmark"/>).
/// </summary>
public static class GemmBenchmark
{
    public static int Run(BenchOptions o)
    {
        int threads = o.Threads ?? ComputeSettings.Threads;
        int[] sizes = o.Sizes ?? [256, 512, 1024, 2048];
        bool decode = !o.NoDecode, reference = !o.NoReference, linear = o.Linear;
        int[] ms = o.M ?? [1, 8, 64, 512, 2048];

        using var threadScope = ComputeSettings.UseThreads(threads);
        var peer = reference ? TorchPeer.Connect(threads) : null;
        if (linear)
        {
            Console.WriteLine(peer is null ? "peer: none (--no-reference or no reference interpreter)" : $"peer: torch.matmul(x, W.T), {peer.Description}");
            int rc = LinearBenchmark.Run(threads, reference, ms, peer);
            peer?.Dispose();
            return rc;
        }
        Console.WriteLine($"fp32 GEMM, threads {threads}, kernel {Gemm.KernelName}, processors {Environment.ProcessorCount}");
        Console.WriteLine(peer is null ? "peer: none (--no-reference or no reference interpreter)" : $"peer: torch.matmul, {peer.Description}");
        Console.WriteLine($"{"shape",-28} {"normal GFLOP/s",15} {"invariant GFLOP/s",18} {"torch GFLOP/s",14} {"ours/torch",11}");
        foreach (int s in sizes) Row($"{s}x{s}x{s}", s, s, s, transposedB: false, peer);
        if (decode) Row("1x4096 by 4096x4096 (W^T)", 1, 4096, 4096, transposedB: true, peer);
        peer?.Dispose();
        return 0;
    }

    private static void Row(string label, int m, int k, int n, bool transposedB, TorchPeer? peer)
    {
        var a = MatrixView.Of(Tensor.Uniform(DType.Float32, 1, -1f, 1f, m, k));
        // Decode multiplies by W^T: a [N, K] weight seen as [K, N] with strides (1, K).
        var b = transposedB
            ? MatrixView.Of(Tensor.Uniform(DType.Float32, 2, -1f, 1f, n, k).T())
            : MatrixView.Of(Tensor.Uniform(DType.Float32, 2, -1f, 1f, k, n));
        var c = new float[(long)m * n];
        double flops = 2.0 * m * n * k;
        double normal = Measure(a, b, c, n, flops, invariant: false);
        double invariant = Measure(a, b, c, n, flops, invariant: true);
        double? torch = peer?.Gflops(m, n, k, transposedB);
        string torchText = torch is double t ? $"{t,14:F1} {normal / t,10:F2}x" : $"{"-",14} {"-",11}";
        Console.WriteLine($"{label,-28} {normal,15:F1} {invariant,18:F1} {torchText}");
    }

    private static double Measure(MatrixView a, MatrixView b, float[] c, int ldc, double flops, bool invariant)
    {
        using var mode = ComputeSettings.UseBatchInvariant(invariant);
        Gemm.Multiply(a, b, c, ldc); // warmup (JIT, buffers, workers)
        var sw = Stopwatch.StartNew();
        Gemm.Multiply(a, b, c, ldc);
        double once = Math.Max(sw.Elapsed.TotalSeconds, 1e-6);
        int runs = (int)Math.Clamp(1.5 / once, 5, 1000);
        double best = double.MaxValue;
        for (int r = 0; r < runs; r++)
        {
            sw.Restart();
            Gemm.Multiply(a, b, c, ldc);
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return flops / best / 1e9;
    }
}
