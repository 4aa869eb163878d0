using System.Diagnostics;
using Harness.Engine.Config;
using Harness.Engine.Cuda;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Llama;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Bench;

/// <summary>
/// `harness check-gpu`: every CUDA piece of the engine against the CPU engine on the same inputs: interop and error
/// reporting, copies, cuBLAS GEMM (fp32/bf16/fp16, transposed, batched, broadcast), the invariant GEMM (bit for bit equal
/// to the CPU's invariant GEMM, and batch-invariant for M = 1..257), every NVRTC kernel, and the tiny Llama's logits.
/// The GPU tests (tests/Correctness/Cuda) run the same checks one by one. Exit 1 on any failure, 3 when no GPU is usable.
/// </summary>
public static class GpuSelfCheck
{
    /// <summary>The checks by name; each returns null on success or what went wrong.</summary>
    public static readonly IReadOnlyList<(string Name, Func<CudaDevice, string?> Run)> Checks =
    [
        ("copy-roundtrip", CopyRoundTrip),
        ("cuda-error-named", ErrorIsNamed),
        ("kernel-cache", KernelCache),
        ("gemm-cublas", GemmCublas),
        ("matmul-shape-rules", MatmulShapes),
        ("gemm-invariant-equals-cpu", InvariantEqualsCpu),
        ("gemm-batch-invariance-m1-257", GemmBatchInvariance),
        ("elementwise-activations", ElementwiseActivations),
        ("norms-softmax", NormsSoftmax),
        ("rmsnorm-batch-invariance-m1-257", RmsNormBatchInvariance),
        ("rope-attention", RopeAttention),
        ("embedding-topk", EmbeddingTopK),
        ("model-ops", GpuModelOpsCheck.Run),
        ("llama-tiny-fp32", d => LlamaLogits(d, "tiny-llama-fp32", 2e-5)),
        ("llama-tiny-bf16", d => LlamaLogits(d, "tiny-llama-bf16", 3e-2)),
        ("decode-device-position-kernels", DecodeSelfCheck.DevicePositionKernels),
        ("llama-graph-decode-fp32", d => DecodeSelfCheck.GraphDecode(d, "tiny-llama-fp32")),
        ("llama-graph-decode-bf16", d => DecodeSelfCheck.GraphDecode(d, "tiny-llama-bf16")),
        ("gemma3n-graph-decode-fp32", d => DecodeSelfCheck.GraphDecode(d, "tiny-gemma3n-fp32")),
        ("gemma3n-graph-decode-bf16", d => DecodeSelfCheck.GraphDecode(d, "tiny-gemma3n-bf16")),
        ("gemma4-graph-decode-fp32", d => DecodeSelfCheck.GraphDecode(d, "tiny-gemma4-e2b-like-fp32")),
        ("gemma4-graph-decode-bf16", d => DecodeSelfCheck.GraphDecode(d, "tiny-gemma4-e2b-like-bf16")),
        ("gemma4-mm-text-graph-decode-bf16", d => DecodeSelfCheck.GraphDecode(d, "tiny-gemma4-e2b-like-mm-bf16")),
        ("moe-indexed-experts", DecodeSelfCheck.IndexedExperts),
        ("gemma4-moe-graph-decode-fp32", d => DecodeSelfCheck.GraphDecode(d, "tiny-gemma4-moe-fp32")),
        ("gemma4-moe-graph-decode-bf16", d => DecodeSelfCheck.GraphDecode(d, "tiny-gemma4-moe-bf16")),
        ("qwen2-vl-graph-decode-fp32", d => DecodeSelfCheck.GraphDecode(d, "tiny-qwen2-vl-fp32")),
        ("qwen2-vl-graph-decode-bf16", d => DecodeSelfCheck.GraphDecode(d, "tiny-qwen2-vl-bf16")),
        ("qwen2-vl-image-graph-decode-fp32", d => DecodeSelfCheck.GraphDecode(d, "tiny-qwen2-vl-fp32", image: true)),
        ("qwen2-vl-image-graph-decode-bf16", d => DecodeSelfCheck.GraphDecode(d, "tiny-qwen2-vl-bf16", image: true)),
        ("graph-decode-check-catches-off-by-one", DecodeSelfCheck.GraphDecodeCatchesOffByOne),
    ];

    public static int Run(string? filter)
    {
        if (!CudaDevice.TryGet(out var device, out var reason))
        {
            Console.WriteLine($"no usable GPU: {reason}");
            return 3;
        }
        Console.WriteLine(Describe(device!));
        int failures = 0;
        foreach (var (name, run) in Checks)
        {
            if (filter is not null && !name.Contains(filter, StringComparison.OrdinalIgnoreCase)) continue;
            var sw = Stopwatch.StartNew();
            string? error;
            try { error = run(device!); }
            catch (Exception e) { error = e.GetType().Name + ": " + e.Message; }
            Console.WriteLine($"{(error is null ? "PASS" : "FAIL")} {name} ({sw.ElapsedMilliseconds} ms){(error is null ? "" : ": " + error)}");
            if (error is not null) failures++;
        }
        Console.WriteLine(failures == 0 ? "all GPU checks passed" : $"{failures} GPU checks FAILED");
        return failures == 0 ? 0 : 1;
    }

    public static string Describe(CudaDevice d) =>
        $"{d}: {d.Name}, sm_{d.Major}{d.Minor}, {d.Multiprocessors} SMs, {d.TotalMemory / (1L << 20)} MiB; " +
        $"CUDA runtime {CudaRuntime.RuntimeVersion()}, driver {CudaRuntime.DriverVersion()}, cuBLAS {Cublas.Version(d.BlasHandle)}, NVRTC {Nvrtc.Version()}; " +
        $"libraries: {string.Join(", ", CudaLibraries.LoadedFrom.Select(kv => kv.Value))}";

    // ---------------- helpers ----------------

    private static ulong _seed = 100;
    internal static Tensor Rand(DType dt, params int[] shape) => Tensor.Normal(dt, Interlocked.Increment(ref _seed), 0f, 1f, shape);

    /// <summary>‖x − ref‖ / ‖ref‖ over float64 copies (NaN fails).</summary>
    private static double RelErr(Tensor got, Tensor want)
    {
        var g = got.ToHost().ToDoubleArray();
        var w = want.ToHost().ToDoubleArray();
        if (g.Length != w.Length) return double.PositiveInfinity;
        double num = 0, den = 0;
        for (int i = 0; i < g.Length; i++)
        {
            if (double.IsNaN(g[i]) != double.IsNaN(w[i])) return double.NaN;
            if (double.IsNaN(g[i])) continue;
            if (double.IsInfinity(w[i])) { if (g[i] != w[i]) return double.PositiveInfinity; continue; }
            num += (g[i] - w[i]) * (g[i] - w[i]);
            den += w[i] * w[i];
        }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    internal static string? Close(string what, Tensor got, Tensor want, double tol)
    {
        if (!Shape.SequenceEqual(got.Shape, want.Shape)) return $"{what}: shape {Shape.Format(got.Shape)} != {Shape.Format(want.Shape)}";
        if (got.DType != want.DType) return $"{what}: dtype {got.DType.TorchName()} != {want.DType.TorchName()}";
        double e = RelErr(got, want);
        return e <= tol ? null : $"{what}: relative error {e:E3} > {tol:E1}";
    }

    internal static string? Bitwise(string what, Tensor got, Tensor want)
    {
        var g = got.ToHost().Contiguous();
        var w = want.ToHost().Contiguous();
        if (!Shape.SequenceEqual(g.Shape, w.Shape) || g.DType != w.DType) return $"{what}: {g} vs {w}";
        var gb = g.Storage.Bytes.Slice(g.Offset * g.DType.Size(), g.NumEl * g.DType.Size());
        var wb = w.Storage.Bytes.Slice(w.Offset * w.DType.Size(), w.NumEl * w.DType.Size());
        if (gb.SequenceEqual(wb)) return null;
        int es = g.DType.Size();
        for (int i = 0; i < g.NumEl; i++)
            if (!gb.Slice(i * es, es).SequenceEqual(wb.Slice(i * es, es)))
                return $"{what}: element {i} differs ({g.ToDoubleArray()[i]:R} vs {w.ToDoubleArray()[i]:R})";
        return null;
    }

    private static string? First(params Func<string?>[] checks)
    {
        foreach (var c in checks) if (c() is { } e) return e;
        return null;
    }

    // ---------------- checks ----------------

    private static string? CopyRoundTrip(CudaDevice d)
    {
        foreach (var dt in new[] { DType.Float32, DType.BFloat16, DType.Float16 })
        {
            var x = Rand(dt, 37, 53);
            if (Bitwise($"{dt.TorchName()} upload/download", x.ToDevice(d).ToHost(), x) is { } e) return e;
            var t = x.T();                                   // strided view: the device copy kernel walks it
            if (Bitwise($"{dt.TorchName()} transposed contiguous", x.ToDevice(d).T().Contiguous().ToHost(), t.Contiguous()) is { } e2) return e2;
        }
        var ids = Tensor.FromArray(new long[] { 5, -3, long.MaxValue, 0 }, 4);
        if (Bitwise("int64 roundtrip", ids.ToDevice(d).ToHost(), ids) is { } e3) return e3;
        var f = Rand(DType.Float32, 301);
        foreach (var dt in new[] { DType.BFloat16, DType.Float16 })
            if (Bitwise($"float32 -> {dt.TorchName()} on device", f.ToDevice(d).To(dt).ToHost(), f.To(dt)) is { } e4) return e4;
        var narrow = x3().ToDevice(d).Narrow(1, 1, 3);
        return Bitwise("narrowed view", narrow.ToHost(), x3().Narrow(1, 1, 3).Contiguous());
        static Tensor x3() => Tensor.Arange(60, DType.Float32).Reshape(3, 4, 5);
    }

    private static string? ErrorIsNamed(CudaDevice d)
    {
        try
        {
            d.Allocate(1L << 50);
            return "a 1 PiB allocation did not fail";
        }
        catch (CudaException e) when (e.Message.Contains("cudaMallocAsync", StringComparison.Ordinal) && e.Message.Contains("cudaErrorMemoryAllocation", StringComparison.Ordinal)) { }
        catch (CudaException e) { return "error did not name the call and error: " + e.Message; }
        try
        {
            Embedding.Lookup(Rand(DType.Float32, 10, 4).ToDevice(d), Tensor.FromArray(new long[] { 3, 12 }, 2));
            return "an out-of-range id did not fail";
        }
        catch (IndexOutOfRangeException e) when (e.Message.Contains("id 12", StringComparison.Ordinal)) { }
        try
        {
            Nvrtc.CompileToCubin("extern \"C\" __global__ void broken() { undefined_thing(); }", "broken.cu", d.Major * 10 + d.Minor, []);
            return "a broken kernel compiled";
        }
        catch (CudaException e) when (e.Message.Contains("undefined_thing", StringComparison.Ordinal)) { }
        // The device still works after the errors.
        var x = Rand(DType.Float32, 8, 8);
        return Close("matmul after errors", Matmul.Forward(x.ToDevice(d), x.ToDevice(d)), Matmul.Forward(x, x), 1e-5);
    }

    private static string? KernelCache(CudaDevice d)
    {
        var x = Rand(DType.Float32, 100).ToDevice(d);
        Activation.Apply(x, ActivationKind.Silu);
        int before = d.Compilations;
        Activation.Apply(x, ActivationKind.Silu);
        Activation.Apply(Rand(DType.Float32, 7).ToDevice(d), ActivationKind.Silu);
        return d.Compilations == before ? null : $"the same kernel was compiled again ({d.Compilations - before} more compilations)";
    }

    private static string? GemmCublas(CudaDevice d)
    {
        foreach (var (dt, tol) in new[] { (DType.Float32, 1e-5), (DType.BFloat16, 8e-3), (DType.Float16, 1e-3) })
            foreach (var (m, k, n) in new[] { (1, 64, 96), (1, 2048, 250), (3, 512, 77), (8, 1024, 64), (7, 129, 33), (128, 256, 64), (257, 300, 129) })
                foreach (bool tb in new[] { false, true })
                {
                    var a = Rand(dt, m, k);
                    var b = tb ? Rand(dt, n, k).T() : Rand(dt, k, n);
                    var want = Matmul.Forward(a, b);
                    var (ad, bd) = (a.ToDevice(d), tb ? b.T().ToDevice(d).T() : b.ToDevice(d));
                    var got = Matmul.Forward(ad, bd);
                    if (Close($"{dt.TorchName()} {m}x{k} @ {k}x{n}{(tb ? " (B^T)" : "")}", got, want, tol) is { } e) return e;
                    var expected = m <= 8 && tb && k % 8 == 0 ? "gemv" : "cublas";
                    if (CudaGemm.PathFor(ad, bd) is var path && path != expected) return $"expected the {expected} path, got {path}";
                }
        return null;
    }

    private static string? MatmulShapes(CudaDevice d)
    {
        (int[] A, int[] B)[] cases =
        [
            ([5], [5]), ([4, 5], [5]), ([5], [5, 3]), ([2, 3, 4, 5], [5, 6]), ([2, 3, 4, 5], [5]), ([5], [2, 5, 3]),
            ([2, 1, 4, 5], [3, 5, 6]), ([3, 4, 5], [3, 5, 6]), ([1, 4, 5], [2, 3, 5, 6]), ([2, 4, 5], [5, 6]),
        ];
        foreach (var (sa, sb) in cases)
        {
            var a = Rand(DType.Float32, sa);
            var b = Rand(DType.Float32, sb);
            var want = Matmul.Forward(a, b);
            var got = Matmul.Forward(a.ToDevice(d), b.ToDevice(d));
            if (Close($"matmul {Shape.Format(sa)} x {Shape.Format(sb)}", got, want, 1e-5) is { } e) return e;
        }
        // Broadcast over a transposed, expanded key view (attention's repeat_kv by broadcast).
        var q = Rand(DType.BFloat16, 2, 3, 5, 16);
        var keys = Rand(DType.BFloat16, 2, 9, 16);
        var wantS = Matmul.Forward(q, keys.Unsqueeze(1).Transpose(-1, -2));
        var gotS = Matmul.Forward(q.ToDevice(d), keys.ToDevice(d).Unsqueeze(1).Transpose(-1, -2));
        return Close("bf16 q @ k^T with repeat_kv by broadcast", gotS, wantS, 8e-3);
    }

    private static string? InvariantEqualsCpu(CudaDevice d)
    {
        using var inv = ComputeSettings.UseBatchInvariant();
        foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
            foreach (var (m, k, n) in new[] { (1, 1, 1), (3, 17, 5), (65, 300, 70), (129, 1000, 33) })
                foreach (bool tb in new[] { false, true })
                {
                    var a = Rand(dt, m, k);
                    var b = tb ? Rand(dt, n, k).T() : Rand(dt, k, n);
                    var want = Matmul.Forward(a, b);
                    var (ad, bd) = (a.ToDevice(d), tb ? b.T().ToDevice(d).T() : b.ToDevice(d));
                    var got = Matmul.Forward(ad, bd);
                    if (CudaGemm.PathFor(ad, bd) is var path && path != "invariant") return $"expected the invariant kernel, got {path}";
                    if (Bitwise($"invariant {dt.TorchName()} {m}x{k} @ {k}x{n}{(tb ? " (B^T)" : "")} GPU vs CPU", got, want) is { } e) return e;
                }
        return null;
    }

    private static string? GemmBatchInvariance(CudaDevice d)
    {
        using var inv = ComputeSettings.UseBatchInvariant();
        foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
        {
            const int k = 384, n = 200, pool = 257;
            var rows = Rand(dt, pool, k).ToDevice(d);
            var w = Rand(dt, n, k).ToDevice(d).T();                    // a linear layer's x @ W^T
            var full = Matmul.Forward(rows, w).ToHost();               // [257, n]
            for (int m = 1; m <= pool; m++)
            {
                var part = Matmul.Forward(rows.Narrow(0, 0, m), w).ToHost();
                if (Bitwise($"{dt.TorchName()} rows of a batch of {m} vs the batch of {pool}", part, full.Narrow(0, 0, m)) is { } e) return e;
            }
            var last = Matmul.Forward(rows.Narrow(0, pool - 1, 1), w).ToHost();
            if (Bitwise($"{dt.TorchName()} row {pool - 1} alone", last, full.Narrow(0, pool - 1, 1)) is { } e2) return e2;
        }
        return null;
    }

    private static string? ElementwiseActivations(CudaDevice d)
    {
        foreach (var (dt, tol) in new[] { (DType.Float32, 2e-6), (DType.BFloat16, 4e-3) })
        {
            var x = Rand(dt, 33, 65);
            var y = Rand(dt, 65);
            var xd = x.ToDevice(d);
            var yd = y.ToDevice(d);
            var e = First(
                () => Close($"{dt.TorchName()} add (broadcast)", Elementwise.Add(xd, yd), Elementwise.Add(x, y), tol),
                () => Close($"{dt.TorchName()} mul", Elementwise.Mul(xd, xd), Elementwise.Mul(x, x), tol),
                () => Close($"{dt.TorchName()} sub", Elementwise.Sub(xd, yd), Elementwise.Sub(x, y), tol),
                () => Close($"{dt.TorchName()} div", Elementwise.Div(xd, Elementwise.Add(yd, 10)), Elementwise.Div(x, Elementwise.Add(y, 10)), tol),
                () => Close($"{dt.TorchName()} mul scalar", Elementwise.Mul(xd, 0.37), Elementwise.Mul(x, 0.37), tol),
                () => Close($"{dt.TorchName()} transposed add", Elementwise.Add(xd.T(), xd.T()), Elementwise.Add(x.T(), x.T()), tol));
            if (e is not null) return e;
            foreach (var kind in new[] { ActivationKind.Gelu, ActivationKind.GeluTanh, ActivationKind.Silu, ActivationKind.QuickGelu, ActivationKind.Relu })
            {
                if (Close($"{dt.TorchName()} {kind}", Activation.Apply(xd, kind), Activation.Apply(x, kind), tol) is { } e1) return e1;
                var g = Rand(dt, 9, 64);
                if (Close($"{dt.TorchName()} gated {kind}", Activation.ApplyGated(g.ToDevice(d), kind), Activation.ApplyGated(g, kind), tol) is { } e2) return e2;
            }
        }
        return null;
    }

    private static string? NormsSoftmax(CudaDevice d)
    {
        foreach (var (dt, tol) in new[] { (DType.Float32, 2e-6), (DType.BFloat16, 4e-3) })
        {
            var x = Rand(dt, 17, 300);
            var w = Rand(dt, 300);
            var b = Rand(dt, 300);
            var xd = x.ToDevice(d);
            foreach (var kind in Enum.GetValues<RmsNormKind>())
            {
                var weight = kind == RmsNormKind.GemmaNoScale ? null : w;
                if (Close($"{dt.TorchName()} rms_norm {kind}", Norms.RmsNorm(xd, weight?.ToDevice(d), 1e-5, kind), Norms.RmsNorm(x, weight, 1e-5, kind), tol) is { } e) return e;
            }
            var r = Rand(dt, 17, 300);
            var (sum, normed) = CudaOps.AddRmsNorm(xd, r.ToDevice(d), w.ToDevice(d), 1e-5f);
            if (Bitwise($"{dt.TorchName()} add_rms_norm sum", sum, Elementwise.Add(x, r)) is { } ea) return ea;
            if (Close($"{dt.TorchName()} add_rms_norm", normed, Norms.RmsNorm(Elementwise.Add(x, r), w, 1e-5), tol) is { } eb) return eb;
            var w32 = Rand(DType.Float32, 300);
            if (Close($"{dt.TorchName()} rms_norm with fp32 weight", Norms.RmsNorm(xd, w32.ToDevice(d), 1e-6), Norms.RmsNorm(x, w32, 1e-6), tol) is { } e0) return e0;
            var e2 = First(
                () => Close($"{dt.TorchName()} layer_norm", Norms.LayerNorm(xd, w.ToDevice(d), b.ToDevice(d), 1e-5), Norms.LayerNorm(x, w, b, 1e-5), tol),
                () => Close($"{dt.TorchName()} layer_norm no affine", Norms.LayerNorm(xd, null, null, 1e-5), Norms.LayerNorm(x, null, null, 1e-5), tol),
                () => Close($"{dt.TorchName()} softmax", Softmax.Forward(xd, -1), Softmax.Forward(x, -1), tol),
                () => Close($"{dt.TorchName()} softmax dim 0", Softmax.Forward(xd, 0), Softmax.Forward(x, 0), tol),
                () => Close($"{dt.TorchName()} log_softmax", Softmax.LogSoftmax(xd, -1), Softmax.LogSoftmax(x, -1), tol));
            if (e2 is not null) return e2;
        }
        return null;
    }

    private static string? RmsNormBatchInvariance(CudaDevice d)
    {
        var rows = Rand(DType.BFloat16, 257, 2048).ToDevice(d);
        var w = Rand(DType.BFloat16, 2048).ToDevice(d);
        var full = Norms.RmsNorm(rows, w, 1e-5).ToHost();
        var sm = Softmax.Forward(rows, -1).ToHost();
        for (int m = 1; m <= 257; m += 1)
        {
            var part = rows.Narrow(0, 257 - m, m);
            if (Bitwise($"rms_norm rows in a batch of {m}", Norms.RmsNorm(part, w, 1e-5).ToHost(), full.Narrow(0, 257 - m, m)) is { } e) return e;
            if (m % 16 == 1 && Bitwise($"softmax rows in a batch of {m}", Softmax.Forward(part, -1).ToHost(), sm.Narrow(0, 257 - m, m)) is { } e2) return e2;
        }
        return null;
    }

    private static string? RopeAttention(CudaDevice d)
    {
        foreach (var (dt, tol) in new[] { (DType.Float32, 2e-6), (DType.BFloat16, 1e-2) })
        {
            int heads = 4, kv = 2, t = 5, hd = 16, past = 3;
            var inv = Rotary.InvFreq(10000, hd);
            var pos = Tensor.Arange(t);
            for (int i = 0; i < t; i++) pos.Set(past + i, i);
            var (cos, sin) = Rotary.CosSin(inv, pos, dt);                   // [1, t, hd]
            var q = Rand(dt, 1, t, heads, hd).Transpose(1, 2);              // [1, heads, t, hd], strided as in the model
            var wantQ = Rotary.Apply(q, cos, sin);
            var gotQ = Rotary.Apply(q.Contiguous().ToDevice(d), cos, sin);
            if (Close($"{dt.TorchName()} rope", gotQ, wantQ, tol) is { } e) return e;
            // attention against a cache of past + t keys: CPU eager path (matmul, scale, mask, softmax, matmul) vs the fused kernel
            var keys = Rand(dt, kv, past + t, hd);
            var values = Rand(dt, kv, past + t, hd);
            var qh = wantQ.Select(0, 0);                                    // [heads, t, hd]
            var qg = qh.Reshape(kv, heads / kv, t, hd);
            var scores = Elementwise.Mul(Matmul.Forward(qg, keys.Unsqueeze(1).Transpose(-1, -2)), Math.Pow(hd, -0.5)).To(DType.Float32).Contiguous();
            var sc = scores.Span<float>();
            for (int p = 0; p < kv * (heads / kv); p++)
                for (int i = 0; i < t; i++)
                    for (int j = past + i + 1; j < past + t; j++) sc[(p * t + i) * (past + t) + j] = float.NegativeInfinity;
            var probs = Softmax.Forward(scores, -1).To(dt);
            var want = Matmul.Forward(probs, values.Unsqueeze(1)).Reshape(heads, t, hd);
            var got = CudaOps.Attention(qh.ToDevice(d), keys.ToDevice(d), values.ToDevice(d), past, 0, (float)Math.Pow(hd, -0.5));
            if (Close($"{dt.TorchName()} fused causal attention", got, want, tol) is { } e2) return e2;
            // the eager path on the device (what the Llama port runs) agrees too
            var scoresD = Elementwise.Mul(Matmul.Forward(qg.ToDevice(d), keys.ToDevice(d).Unsqueeze(1).Transpose(-1, -2)), Math.Pow(hd, -0.5)).To(DType.Float32);
            CudaOps.MaskFuture(scoresD, t, past + t, past);
            var outD = Matmul.Forward(Softmax.Forward(scoresD, -1).To(dt), values.ToDevice(d).Unsqueeze(1)).Reshape(heads, t, hd);
            if (Close($"{dt.TorchName()} eager attention on the device", outD, want, tol) is { } e3) return e3;
            // sliding window: window 3 equals masking keys older than 2 positions back
            var gotW = CudaOps.Attention(qh.ToDevice(d), keys.ToDevice(d), values.ToDevice(d), past, 3, (float)Math.Pow(hd, -0.5)).ToHost();
            for (int p = 0; p < kv * (heads / kv); p++)
                for (int i = 0; i < t; i++)
                    for (int j = 0; j < past + i - 2; j++) sc[(p * t + i) * (past + t) + j] = float.NegativeInfinity;
            var wantW = Matmul.Forward(Softmax.Forward(scores, -1).To(dt), values.Unsqueeze(1)).Reshape(heads, t, hd);
            if (Close($"{dt.TorchName()} sliding-window attention", gotW, wantW, tol) is { } e4) return e4;
        }
        return null;
    }

    private static string? EmbeddingTopK(CudaDevice d)
    {
        var table = Rand(DType.BFloat16, 50, 24);
        var ids = Tensor.FromArray(new long[] { 3, 0, 49, 3, 17, 8 }, 2, 3);
        if (Bitwise("embedding", Embedding.Lookup(table.ToDevice(d), ids), Embedding.Lookup(table, ids)) is { } e) return e;
        foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
        {
            var x = Rand(dt, 3, 1000);
            x.Set(x.At(0, 5), 0, 900);                                      // a tie: the lower index comes first
            var (wv, wi) = TopK.Forward(x, 10);
            var (gv, gi) = TopK.Forward(x.ToDevice(d), 10);
            if ((Bitwise($"{dt.TorchName()} topk values", gv, wv) ?? Bitwise($"{dt.TorchName()} topk indices", gi, wi)) is { } e2) return e2;
        }
        return null;
    }

    /// <summary>The recorded tiny Llama's prefill logits and greedy tokens: GPU vs CPU engine.</summary>
    private static string? LlamaLogits(CudaDevice d, string model, double tol)
    {
        var dir = FindModel(model);
        if (dir is null) return $"fixtures/models/{model} not found (run from the repository or the bundle)";
        var config = HfConfig.Load(Path.Combine(dir, "config.json")).Text;
        using var checkpoint = Checkpoint.Open(dir);
        var cpuWeights = new CheckpointWeights(checkpoint);
        var gpuWeights = new DeviceWeights(cpuWeights, d);
        var ids = Tensor.FromArray(new long[] { 1, 17, 42, 99, 5, 150, 7, 3 }, 8);
        var want = new LlamaForCausalLM(cpuWeights, config, ParallelContext.Single).Forward(ids, 8)!;
        var got = new LlamaForCausalLM(gpuWeights, config, ParallelContext.Single).Forward(ids, 8)!;
        if (!got.IsCuda) return "the GPU model's logits are on the host";
        if (Close($"{model} prefill logits", got, want, tol) is { } e) return e;
        // Greedy tokens only in float32: in bf16 a near-tie of two logits flips with the summation order (GEMV vs the
        // CPU's blocked GEMM); the catalog's bf16 scenarios judge the GPU's tokens against HF with a logprob tolerance.
        if (model.Contains("bf16", StringComparison.Ordinal)) return null;
        var genCpu = new LlamaForCausalLM(cpuWeights, config, ParallelContext.Single).Generate(ids, 6, 3);
        var genGpu = new LlamaForCausalLM(gpuWeights, config, ParallelContext.Single).Generate(ids, 6, 3);
        return genCpu.Tokens.SequenceEqual(genGpu.Tokens) ? null
            : $"{model} greedy tokens differ: CPU {string.Join(",", genCpu.Tokens)} vs GPU {string.Join(",", genGpu.Tokens)}";
    }

    /// <summary>fixtures/models/NAME: under the fixtures folder the catalog uses (HARNESS_FIXTURES first: a test runner may
    /// start in its own folder, as the GPU suite's xunit v3 executable does), else the nearest one above the working
    /// directory or the assembly (a bundle).</summary>
    internal static string? FindModel(string name)
    {
        var fixtures = Path.Combine(Scenarios.Fixtures.DefaultDirectory(), "models", name);
        if (File.Exists(Path.Combine(fixtures, "config.json"))) return fixtures;
        foreach (var root in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(root); dir is not null; dir = dir.Parent)
            {
                var p = Path.Combine(dir.FullName, "fixtures", "models", name);
                if (File.Exists(Path.Combine(p, "config.json"))) return p;
            }
        return null;
    }
}
