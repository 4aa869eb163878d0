using System.Diagnostics;
using System.Runtime.Intrinsics;
using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Layers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Bench;

/// <summary>
/// `harness bench --linear`: nn.Linear (y = x W^T, W [N, K] packed once at load) on a model's own shapes, fp32 and bf16,
/// M = 1, 8, 64, 512, 2048, through <see cref="Linear.Forward"/> (the layer a model calls: output allocation and the bf16
/// rounding included). Printed beside the square fp32 GEMM rate and the copy bandwidth measured in the same run (the
/// ratios are the figures to read on a shared machine), and beside torch.matmul(x, W.T) from the reference worker (same
/// shape, dtype and threads). GFLOP/s are best of N with W warm in cache, as torch's; for M &lt;= 8 the "cold" column is
/// bytes of W (as packed: bf16 stays 2 bytes) over the median time with W flushed out of every cache before each call
/// (a model's decode reads each weight from memory once per token), and "of copy" divides it by the copy bandwidth.
/// </summary>
public static class LinearBenchmark
{
    /// <summary>The 155M Llama of issue 15 (hidden 1024, intermediate 2816, vocab 32000) and a 7B-class projection.</summary>
    private static readonly (string Name, int K, int N)[] Shapes =
    [
        ("q/o_proj 1024->1024", 1024, 1024), ("gate/up 1024->2816", 1024, 2816), ("down 2816->1024", 2816, 1024),
        ("lm_head 1024->32000", 1024, 32000), ("7B proj 4096->4096", 4096, 4096),
    ];

    public static int Run(int threads, bool reference, int[] ms, TorchPeer? peer)
    {
        Console.WriteLine($"linear layers: y = x W^T, W packed once at load; threads {threads}, fp32 kernel {Gemm.KernelName}");
        Console.WriteLine($"bf16 kernel: {Gemm.Bf16KernelName}" +
            (Gemm.NativeBf16UnsupportedReason is null ? "; the last column forces the other one" : ""));
        using var flush = new CacheFlusher();
        bool nativeRuns = Gemm.NativeBf16UnsupportedReason is null;
        // The bf16 kernel not chosen by default, forced, in its own column (where the native one can run at all).
        bool defaultNative = Gemm.Bf16KernelName.StartsWith("native", StringComparison.Ordinal);
        string altName = defaultNative ? "widen" : "native";
        Console.WriteLine("ratios use the square fp32 GEMM 1024^3 and the copy bandwidth re-measured before each layer (printed with it): the machine's load moves both");
        Console.WriteLine($"{"layer",-22} {"dtype",-5} {"M",5} {"GFLOP/s",8} {"of square",9} {"cold W GB/s",11} {"of copy",7} {"torch",7} {"ours/torch",10}{(nativeRuns ? $" {altName,7}" : "")}");
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
            foreach (var (name, k, n) in Shapes)
            {
                double square = SquareRate(1024), copy = flush.CopyBandwidth(threads);
                Console.WriteLine($"-- {name} {(dtype == DType.Float32 ? "fp32" : "bf16")}: square fp32 GEMM {square:F1} GFLOP/s, copy {copy:F1} GB/s (read + write bytes)");
                var weight = Tensor.Uniform(dtype, 2, -0.05f, 0.05f, n, k);
                var linear = new Linear(weight);
                foreach (int m in ms)
                {
                    var x = Tensor.Uniform(dtype, 1, -1f, 1f, m, k);
                    double flops = 2.0 * m * n * k;
                    double ours = flops / Best(() => linear.Forward(x)) / 1e9;
                    string cold = "", ofCopy = "";
                    if (m <= 8)
                    {
                        double bytes = (double)n * k * dtype.Size();
                        double gbs = bytes / flush.ColdMedian(() => linear.Forward(x)) / 1e9;
                        cold = $"{gbs:F1}";
                        ofCopy = $"{gbs / copy:P0}";
                    }
                    double? torch = peer?.Gflops(m, n, k, transposeB: true, dtype);
                    string t = torch is double tv ? $"{tv,7:F1} {ours / tv,9:F2}x" : $"{"-",7} {"-",10}";
                    string alt = "";
                    if (nativeRuns && dtype == DType.BFloat16)
                        using (Gemm.ForceNativeBf16(!defaultNative)) alt = $" {flops / Best(() => linear.Forward(x)) / 1e9,7:F1}";
                    Console.WriteLine($"{name,-22} {(dtype == DType.Float32 ? "fp32" : "bf16"),-5} {m,5} {ours,8:F1} {ours / square,9:P0} {cold,11} {ofCopy,7} {t}{alt}");
                }
            }
        return 0;
    }

    private static double SquareRate(int s)
    {
        var a = MatrixView.Of(Tensor.Uniform(DType.Float32, 1, -1f, 1f, s, s));
        var b = MatrixView.Of(Tensor.Uniform(DType.Float32, 2, -1f, 1f, s, s));
        var c = new float[s * s];
        return 2.0 * s * s * s / Best(() => Gemm.Multiply(a, b, c, s)) / 1e9;
    }

    /// <summary>Best of N seconds (warm-up first; N so that a cell takes about 0.5 s, 3 to 200 calls).</summary>
    private static double Best(Action run)
    {
        run();
        var sw = Stopwatch.StartNew();
        run();
        double once = Math.Max(sw.Elapsed.TotalSeconds, 1e-6);
        int runs = (int)Math.Clamp(0.5 / once, 3, 200);
        double best = double.MaxValue;
        for (int r = 0; r < runs; r++)
        {
            sw.Restart();
            run();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return best;
    }

    /// <summary>Evicts every cache by reading a buffer twice the last-level cache (at least 256 MiB) between timed calls.</summary>
    private sealed class CacheFlusher : IDisposable
    {
        private readonly long[] _a, _b;
        public long Bytes { get; }

        public CacheFlusher()
        {
            long l3 = 32L << 20;
            try
            {
                var text = File.ReadAllText("/sys/devices/system/cpu/cpu0/cache/index3/size").Trim();
                if (text.EndsWith('K') && long.TryParse(text[..^1], out var kib)) l3 = kib << 10;
                else if (text.EndsWith('M') && long.TryParse(text[..^1], out var mib)) l3 = mib << 20;
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            Bytes = Math.Clamp(2 * l3, 256L << 20, 1L << 30);
            _a = new long[Bytes / 8];
            _b = new long[Bytes / 8];
            _a.AsSpan().Fill(1);
        }

        public long Flush()
        {
            var s = Vector256<long>.Zero;
            var span = _b.AsSpan();
            for (int i = 0; i + 4 <= span.Length; i += 8) s += Vector256.Create(span[i], span[i + 1], span[i + 2], span[i + 3]);
            return Vector256.Sum(s);
        }

        /// <summary>Bytes moved per second by a copy (read + write, the convention of `bench --model`), the buffer split over the threads, best of 3.</summary>
        public double CopyBandwidth(int threads)
        {
            double best = double.MaxValue;
            for (int r = 0; r < 3; r++)
            {
                var sw = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                {
                    long n = _a.LongLength, lo = n * t / threads, hi = n * (t + 1) / threads;
                    _a.AsSpan((int)lo, (int)(hi - lo)).CopyTo(_b.AsSpan((int)lo, (int)(hi - lo)));
                });
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            return 2.0 * Bytes / best / 1e9;
        }

        /// <summary>Median seconds of one call with every cache flushed before it (7 calls after a warm-up).</summary>
        public double ColdMedian(Action run)
        {
            run();
            var times = new List<double>();
            for (int r = 0; r < 7; r++)
            {
                Flush();
                var sw = Stopwatch.StartNew();
                run();
                times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            return times[times.Count / 2];
        }

        public void Dispose() { }
    }
}
