using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// The one driver of the CUDA kernels: each entry checks its arguments once (shapes, dtypes, device), makes the operands
/// the kernel's contract needs, instantiates and caches the kernel source (<see cref="CudaDevice.Function"/>) and launches.
/// The engine's ops (<c>Ops.*</c>) call these when their inputs are device tensors.
/// </summary>
public static class CudaOps
{
    private const int Threads = 256;

    private static (uint, uint, uint) GridFor(CudaDevice d, long n) =>
        ((uint)Math.Max(1, Math.Min((n + Threads - 1) / Threads, (long)d.Multiprocessors * 16)), 1u, 1u);

    private static CudaDevice DeviceOf(string op, params Tensor?[] ts)
    {
        CudaDevice? device = null;
        foreach (var t in ts)
        {
            if (t is null) continue;
            var d = t.Storage.Device?.Device ?? throw new ArgumentException($"{op}: {t} is on the host while the op runs on CUDA; move it with ToDevice()");
            if (device is not null && d != device) throw new ArgumentException($"{op}: tensors on {device} and {d}");
            device = d;
        }
        return device ?? throw new ArgumentException($"{op}: no device tensor");
    }

    private static string ElemType(DType dtype) => dtype.Size() switch
    {
        1 => "unsigned char", 2 => "unsigned short", 4 => "unsigned int", 8 => "unsigned long long",
        _ => throw new NotSupportedException(dtype.ToString()),
    };

    // ---- copies ----

    /// <summary>A contiguous device copy of <paramref name="src"/> (any strides) in <paramref name="dtype"/>.</summary>
    public static Tensor Copy(Tensor src, DType dtype)
    {
        var device = DeviceOf("copy", src);
        var dst = CudaTensors.Empty(device, dtype, src.ShapeArray);
        CopyInto(src, dst);
        return dst;
    }

    /// <summary>dst.copy_(src): same shape (src already expanded), dtype converted; either side may be on the host.</summary>
    public static void CopyInto(Tensor src, Tensor dst)
    {
        if (!Shape.SequenceEqual(src.Shape, dst.Shape))
            throw new ArgumentException($"copy: source {Shape.Format(src.Shape)} and destination {Shape.Format(dst.Shape)} differ");
        if (!dst.IsCuda)
        {
            dst.CopyFrom(CudaTensors.Download(src));
            return;
        }
        var device = dst.CudaDevice;
        if (!src.IsCuda) src = CudaTensors.Upload(src, device);
        long n = dst.NumEl;
        if (n == 0) return;
        string name;
        nint f;
        if (src.DType == dst.DType)
        {
            name = "copy_bits";
            var elem = ElemType(src.DType);
            f = device.Function("copy_bits/" + elem, name, () => CudaSource.Prelude + ElementwiseKernels.CopyBits.Replace("ELEM", elem));
        }
        else
        {
            if (!src.DType.IsFloatingPoint() || !dst.DType.IsFloatingPoint())
                throw new NotSupportedException($"CUDA copy converts between float dtypes only ({src.DType.TorchName()} to {dst.DType.TorchName()})");
            name = "copy_convert";
            var (si, di) = (src.DType, dst.DType);
            f = device.Function($"copy_convert/{CudaSource.Token(si)}/{CudaSource.Token(di)}", name, () => CudaSource.Instantiate(ElementwiseKernels.CopyConvert, si, di));
        }
        using var args = new KernelArgs().Ptr(src).Add(TensorDesc.Of(src)).Ptr(dst).Add(TensorDesc.Of(dst)).Add(n);
        args.Launch(device, f, name, GridFor(device, n), (Threads, 1, 1));
    }

    // ---- element-wise ----

    /// <summary>out = OP(x) (s: the scalar of scalar ops), contiguous, in <paramref name="outDType"/> (default: x's).</summary>
    public static Tensor Unary<TOp>(Tensor x, float s = 0f, DType? outDType = null) where TOp : ICudaElementwiseOp
    {
        var device = DeviceOf(TOp.Name, x);
        RequireFloat(x, TOp.Name);
        var y = CudaTensors.Empty(device, outDType ?? x.DType, x.ShapeArray);
        long n = x.NumEl;
        using var args = new KernelArgs().Ptr(x).Add(TensorDesc.Of(x)).Ptr(y).Add(s).Add(n);
        var f = device.Function($"unary_{TOp.Name}/{CudaSource.Token(x.DType)}/{CudaSource.Token(y.DType)}", "unary_" + TOp.Name, () => CudaSource.Instantiate(ElementwiseKernels.Unary.Replace("NAME", TOp.Name).Replace("EXPR", TOp.Expression), x.DType, y.DType));
        args.Launch(device, f, "unary_" + TOp.Name, GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>out = OP(a, b) with torch broadcasting, rounded once to <paramref name="outDType"/>.</summary>
    public static Tensor Binary<TOp>(Tensor a, Tensor b, DType outDType) where TOp : ICudaElementwiseOp
    {
        var device = DeviceOf(TOp.Name, a, b);
        RequireFloat(a, TOp.Name);
        RequireFloat(b, TOp.Name);
        var shape = Shape.Broadcast(a.Shape, b.Shape);
        var ea = a.Expand(shape);
        var eb = b.Expand(shape);
        var y = CudaTensors.Empty(device, outDType, shape);
        long n = y.NumEl;
        using var args = new KernelArgs().Ptr(ea).Add(TensorDesc.Of(ea)).Ptr(eb).Add(TensorDesc.Of(eb)).Ptr(y).Add(n);
        var f = device.Function($"binary_{TOp.Name}/{CudaSource.Token(a.DType)}/{CudaSource.Token(outDType)}/{CudaSource.Token(b.DType)}", "binary_" + TOp.Name, () => CudaSource.Instantiate(ElementwiseKernels.Binary.Replace("NAME", TOp.Name).Replace("EXPR", TOp.Expression), a.DType, outDType, b.DType));
        args.Launch(device, f, "binary_" + TOp.Name, GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>HF's act(gate) * up: the activation rounds to the dtype, the product rounds again. gate and up of one shape.</summary>
    public static Tensor Gated<TOp>(Tensor gate, Tensor up) where TOp : ICudaElementwiseOp
    {
        var device = DeviceOf("gated " + TOp.Name, gate, up);
        if (!Shape.SequenceEqual(gate.Shape, up.Shape) || gate.DType != up.DType)
            throw new ArgumentException($"gated {TOp.Name}: gate {gate} and up {up} must have one shape and dtype");
        var y = CudaTensors.Empty(device, gate.DType, gate.ShapeArray);
        long n = y.NumEl;
        using var args = new KernelArgs().Ptr(gate).Add(TensorDesc.Of(gate)).Ptr(up).Add(TensorDesc.Of(up)).Ptr(y).Add(n);
        var f = device.Function($"gated_{TOp.Name}/{CudaSource.Token(gate.DType)}", "gated_" + TOp.Name, () => CudaSource.Instantiate(ElementwiseKernels.Gated.Replace("NAME", TOp.Name).Replace("EXPR", TOp.Expression), gate.DType));
        args.Launch(device, f, "gated_" + TOp.Name, GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    // ---- row reductions ----

    /// <summary>RMSNorm over the last dim (kind 0 Llama, 1 Gemma 1+w, 2 Gemma scaled, 3 no weight); output dtype as the CPU op.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor? weight, float eps, int kind, DType outDType)
    {
        var device = DeviceOf("rms_norm", x, weight);
        var xc = x.Contiguous();
        int n = x.Rank == 0 ? 1 : x.Size(-1);
        var y = CudaTensors.Empty(device, outDType, x.ShapeArray);
        var w = weight?.Contiguous();
        var wdt = w?.DType ?? x.DType;
        int rows = n == 0 ? 0 : x.NumEl / n;
        using var args = new KernelArgs().Ptr(xc).Add(w is null ? 0 : CudaTensors.Address(w)).Ptr(y).Add(n).Add(eps).Add(kind);
        var f = device.Function($"rms_norm/{CudaSource.Token(x.DType)}/{CudaSource.Token(outDType)}/{CudaSource.Token(wdt)}", "rms_norm", () => CudaSource.Instantiate(RowKernels.RmsNorm, x.DType, outDType, wdt));
        args.Launch(device, f, "rms_norm", ((uint)rows, 1, 1), (RowKernels.Threads, 1, 1));
        return y;
    }

    /// <summary>(a + b, LlamaRMSNorm(a + b)) in one pass: a, b [.., n] of one shape and dtype; the sum in that dtype.</summary>
    public static (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor a, Tensor b, Tensor weight, float eps)
    {
        var device = DeviceOf("add_rms_norm", a, b, weight);
        if (!Shape.SequenceEqual(a.Shape, b.Shape) || a.DType != b.DType)
            throw new ArgumentException($"add_rms_norm: {a} and {b} must have one shape and dtype");
        int n = a.Size(-1);
        var (ac, bc, w) = (a.Contiguous(), b.Contiguous(), weight.Contiguous());
        var outDType = w.DType != a.DType ? DType.Float32 : a.DType;                // torch's promotion, as RmsNorm
        var sum = CudaTensors.Empty(device, a.DType, a.ShapeArray);
        var y = CudaTensors.Empty(device, outDType, a.ShapeArray);
        var f = device.Function($"add_rms_norm/{CudaSource.Token(a.DType)}/{CudaSource.Token(outDType)}/{CudaSource.Token(w.DType)}", "add_rms_norm",
            () => CudaSource.Instantiate(RowKernels.AddRmsNorm, a.DType, outDType, w.DType));
        int rows = n == 0 ? 0 : a.NumEl / n;
        using var args = new KernelArgs().Ptr(ac).Ptr(bc).Ptr(sum).Ptr(w).Ptr(y).Add(n).Add(eps);
        args.Launch(device, f, "add_rms_norm", ((uint)rows, 1, 1), (RowKernels.Threads, 1, 1));
        return (sum, y);
    }

    public static Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, float eps)
    {
        var device = DeviceOf("layer_norm", x, weight, bias);
        var xc = x.Contiguous();
        int n = x.Rank == 0 ? 1 : x.Size(-1);
        var y = CudaTensors.Empty(device, x.DType, x.ShapeArray);
        var w = weight?.Contiguous();
        var b = bias?.Contiguous();
        if (w is not null && b is not null && w.DType != b.DType) b = b.To(w.DType);
        int rows = n == 0 ? 0 : x.NumEl / n;
        using var args = new KernelArgs().Ptr(xc).Add(w is null ? 0 : CudaTensors.Address(w)).Add(b is null ? 0 : CudaTensors.Address(b))
            .Ptr(y).Add(n).Add(eps).Add(w is null ? 0 : 1).Add(b is null ? 0 : 1);
        var f = device.Function($"layer_norm/{CudaSource.Token(x.DType)}/{w?.DType ?? b?.DType ?? x.DType}", "layer_norm", () => CudaSource.Instantiate(RowKernels.LayerNorm, x.DType, x.DType, w?.DType ?? b?.DType ?? x.DType));
        args.Launch(device, f, "layer_norm", ((uint)rows, 1, 1), (RowKernels.Threads, 1, 1));
        return y;
    }

    /// <summary>softmax or log_softmax over the last dim in float32, rounded once to <paramref name="outDType"/>.</summary>
    public static Tensor Softmax(Tensor x, bool log, DType outDType)
    {
        var device = DeviceOf(log ? "log_softmax" : "softmax", x);
        var xc = x.Contiguous();
        int n = x.Rank == 0 ? 1 : x.Size(-1);
        var y = CudaTensors.Empty(device, outDType, x.ShapeArray);
        int rows = n == 0 ? 0 : x.NumEl / n;
        using var args = new KernelArgs().Ptr(xc).Ptr(y).Add(n).Add(log ? 1 : 0);
        var f = device.Function($"softmax/{CudaSource.Token(x.DType)}/{CudaSource.Token(outDType)}", "softmax", () => CudaSource.Instantiate(RowKernels.Softmax, x.DType, outDType));
        args.Launch(device, f, "softmax", ((uint)rows, 1, 1), (RowKernels.Threads, 1, 1));
        return y;
    }

    // ---- attention ----

    /// <summary>
    /// apply_rotary_pos_emb: x [..., t, d] (any strides), cos/sin broadcastable to it with shape [.., t, d] where every
    /// leading dim is 1 (one position table for all planes), in x's dtype. Returns contiguous x's shape.
    /// </summary>
    public static Tensor Rope(Tensor x, Tensor cos, Tensor sin)
    {
        var device = DeviceOf("rope", x, cos, sin);
        int d = x.Size(-1), t = x.Rank >= 2 ? x.Size(-2) : 1;
        if (d % 2 != 0) throw new ArgumentException($"rope: head dim must be even, got shape {Shape.Format(x.Shape)}");
        if (cos.NumEl != t * d || sin.NumEl != t * d)
            throw new ArgumentException($"rope: cos {Shape.Format(cos.Shape)} / sin {Shape.Format(sin.Shape)} must hold one [{t}, {d}] table for x {Shape.Format(x.Shape)}");
        var c = cos.DType == x.DType ? cos.Contiguous() : cos.To(x.DType);
        var s = sin.DType == x.DType ? sin.Contiguous() : sin.To(x.DType);
        var x3 = x.Rank == 3 ? x : x.Reshape(-1, t, d);
        var y = CudaTensors.Empty(device, x.DType, x.ShapeArray);
        long n = y.NumEl;
        using var args = new KernelArgs().Ptr(x3).Add(TensorDesc.Of(x3)).Ptr(c).Ptr(s).Ptr(y).Add(n);
        var f = device.Function($"rope/{CudaSource.Token(x.DType)}", "rope", () => CudaSource.Instantiate(AttentionKernels.Rope, x.DType));
        args.Launch(device, f, "rope", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>
    /// Grouped-query attention of q [heads, t, hd] against k, v [kvHeads, s, hd] (views of the cache), causal from
    /// position <paramref name="past"/>, sliding <paramref name="window"/> (0: none). Returns [heads, t, hd] contiguous.
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, int past, int window, float scale)
    {
        var device = DeviceOf("attention", q, k, v);
        if (q.Rank != 3 || k.Rank != 3 || v.Rank != 3 || k.Size(2) != q.Size(2) || v.Size(2) != q.Size(2) || k.Size(0) != v.Size(0)
            || k.Size(1) != v.Size(1) || q.Size(0) % k.Size(0) != 0 || q.DType != k.DType || q.DType != v.DType)
            throw new ArgumentException($"attention: q [heads, t, hd], k and v [kv, s, hd] with heads % kv == 0 and one dtype; got {q}, {k}, {v}");
        int s = k.Size(1);
        var y = CudaTensors.Empty(device, q.DType, q.ShapeArray);
        var f = device.Function($"attention/{CudaSource.Token(q.DType)}", "attention", () => CudaSource.Instantiate(AttentionKernels.Attention, q.DType));
        uint shared = (uint)(s * sizeof(float));
        if (shared > 48 * 1024) Interop.CudaDriver.FuncSetMaxDynamicShared(f, (int)shared, "attention");
        using var args = new KernelArgs().Ptr(q).Add(TensorDesc.Of(q)).Ptr(k).Add(TensorDesc.Of(k)).Ptr(v).Add(TensorDesc.Of(v)).Ptr(y)
            .Add(past).Add(window).Add(scale);
        args.Launch(device, f, "attention", ((uint)q.Size(1), (uint)q.Size(0), 1), (128, 1, 1), shared);
        return y;
    }

    /// <summary>In place on contiguous float32 scores [planes, t, s]: -inf where key j &gt; past + i.</summary>
    public static void MaskFuture(Tensor scores, int t, int s, int past)
    {
        var device = DeviceOf("mask_future", scores);
        if (scores.DType != DType.Float32 || !scores.IsContiguous) throw new ArgumentException($"mask_future: contiguous float32 scores, got {scores}");
        long n = scores.NumEl;
        using var args = new KernelArgs().Ptr(scores).Add(t).Add(s).Add(past).Add(n);
        var f = device.Function("mask_future", "mask_future", () => CudaSource.Prelude + AttentionKernels.MaskFuture);
        args.Launch(device, f, "mask_future", GridFor(device, n), (Threads, 1, 1));
    }

    // ---- lookups ----

    /// <summary>Rows of a [vocab, hidden] device table picked by ids (host or device, int32/int64); out-of-range ids throw.</summary>
    public static Tensor Embedding(Tensor weight, Tensor ids)
    {
        var device = DeviceOf("embedding", weight);
        var table = weight.Contiguous();
        int vocab = weight.Size(0), hidden = weight.Size(1), rows = ids.NumEl;
        if (!ids.IsCuda)
        {   // host ids (a prompt, a sampled token): checked here, so the launch needs no error flag and no read-back
            var host = ids.ToInt64Array();
            for (int i = 0; i < host.Length; i++)
                if (host[i] < 0 || host[i] >= vocab)
                    throw new IndexOutOfRangeException(
                        $"embedding: id {host[i]} (at flat position {i} of ids shape {Shape.Format(ids.Shape)}) is out of range for a vocab size of {vocab} (valid ids are 0..{vocab - 1})");
        }
        var ids64 = ids.IsCuda ? (ids.DType == DType.Int64 ? ids.Contiguous() : throw new ArgumentException("embedding: device ids must be int64"))
            : CudaTensors.Upload(Tensor.FromArray(ids.ToInt64Array(), ids.NumEl), device);
        var y = CudaTensors.Empty(device, weight.DType, [.. ids.ShapeArray, hidden]);
        var bad = CudaTensors.Zeros(device, DType.Int32, 1);
        var f = device.Function($"embedding/{weight.DType.Size()}", "embedding", () => CudaSource.Prelude + IndexKernels.Embedding.Replace("ELEM", ElemType(weight.DType)));
        using (var args = new KernelArgs().Ptr(table).Ptr(ids64).Ptr(y).Add(rows).Add(hidden).Add(vocab).Ptr(bad))
            args.Launch(device, f, "embedding", ((uint)rows, 1, 1), (Threads, 1, 1));
        int badRow = ids.IsCuda ? (int)bad.ToHost().Item() : 0;
        if (badRow != 0)
        {
            long id = ids64.ToHost().ToInt64Array()[badRow - 1];
            throw new IndexOutOfRangeException(
                $"embedding: id {id} (at flat position {badRow - 1} of ids shape {Shape.Format(ids.Shape)}) is out of range for a vocab size of {vocab} (valid ids are 0..{vocab - 1})");
        }
        return y;
    }

    /// <summary>torch.topk(x, k) over the last dim: values in x's dtype, int64 indices; ties keep the lower index first.</summary>
    public static (Tensor Values, Tensor Indices) TopK(Tensor x, int k)
    {
        var device = DeviceOf("topk", x);
        RequireFloat(x, "topk");
        int n = x.Size(-1);
        if (k < 0 || k > n) throw new ArgumentOutOfRangeException(nameof(k), $"topk: selected index k={k} out of range for last dim of size {n} (shape {Shape.Format(x.Shape)})");
        var xc = x.Contiguous();
        var shape = x.ShapeArray;
        shape[^1] = k;
        var values = CudaTensors.Empty(device, DType.Float32, shape);
        var indices = CudaTensors.Empty(device, DType.Int64, shape);
        int rows = n == 0 ? 0 : x.NumEl / n;
        var f = device.Function($"topk/{CudaSource.Token(x.DType)}", "topk", () => CudaSource.Instantiate(IndexKernels.TopK, x.DType));
        using (var args = new KernelArgs().Ptr(xc).Ptr(values).Ptr(indices).Add(n).Add(k))
            args.Launch(device, f, "topk", ((uint)rows, 1, 1), (Threads, 1, 1));
        return (x.DType == DType.Float32 ? values : Copy(values, x.DType), indices);
    }

    private static void RequireFloat(Tensor t, string op)
    {
        if (!t.DType.IsFloatingPoint())
            throw new ArgumentException($"{op}: expected a floating-point tensor (float32, bfloat16, float16), got {t.DType.TorchName()} of shape {Shape.Format(t.Shape)}");
    }
}
