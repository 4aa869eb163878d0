using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// The driver of <see cref="ModelKernels"/> (the ops the Gemma3n, Gemma4 and Qwen2-VL forwards add to Llama's), in the
/// manner of <see cref="CudaOps"/>: each entry checks its arguments once, makes the operands the kernel's contract needs,
/// instantiates and caches the kernel and launches it (every launch checked by <see cref="KernelArgs.Launch"/>).
/// Host operands that are inputs (masks, index lists, 0-dim scalars) are uploaded; activations never leave the device.
/// </summary>
public static class CudaModelOps
{
    private const int Threads = 256;

    private static (uint, uint, uint) GridFor(CudaDevice d, long n) =>
        ((uint)Math.Max(1, Math.Min((n + Threads - 1) / Threads, (long)d.Multiprocessors * 16)), 1u, 1u);

    private static string ElemType(DType dtype) => dtype.Size() switch
    {
        1 => "unsigned char", 2 => "unsigned short", 4 => "unsigned int", 8 => "unsigned long long",
        _ => throw new NotSupportedException(dtype.ToString()),
    };

    /// <summary>The device of the first device tensor among <paramref name="ts"/> (an op with a CUDA operand runs there).</summary>
    public static CudaDevice DeviceOf(string op, params Tensor?[] ts) =>
        ts.FirstOrDefault(t => t is { IsCuda: true })?.CudaDevice ?? throw new ArgumentException($"{op}: no device tensor");

    /// <summary>
    /// The error of an op that has no CUDA path, naming the op and the device operands' shapes, rather than a host read
    /// of device memory deep inside the CPU kernel.
    /// </summary>
    public static NotSupportedException NoCudaPath(string op, params Tensor?[] ts)
    {
        var dev = ts.Where(t => t is { IsCuda: true }).Select(t => $"{t!.DType.TorchName()} {Shape.Format(t.Shape)} on {t.DeviceName}");
        return new NotSupportedException($"{op}: no CUDA path for these operands ({string.Join(", ", dev)}); the engine runs this op on the host only");
    }

    /// <summary>torch.where(mask, a, b): every operand broadcast to one shape; a and b in <paramref name="dtype"/> (converted first).</summary>
    public static Tensor Where(Tensor mask, Tensor a, Tensor b, DType dtype)
    {
        var device = DeviceOf("where", mask, a, b);
        if (mask.DType != DType.Bool) throw new ArgumentException($"where: the condition must be bool, got {mask.DType.TorchName()}");
        var shape = Shape.Broadcast(Shape.Broadcast(mask.Shape, a.Shape), b.Shape);
        var m = mask.ToDevice(device).Expand(shape);
        var ea = a.ToDevice(device).To(dtype).Expand(shape);
        var eb = b.ToDevice(device).To(dtype).Expand(shape);
        var y = CudaTensors.Empty(device, dtype, shape);
        long n = y.NumEl;
        var elem = ElemType(dtype);
        var f = device.Function("where_select/" + elem, "where_select", () => CudaSource.Prelude + ModelKernels.Where.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(m).Add(TensorDesc.Of(m)).Ptr(ea).Add(TensorDesc.Of(ea)).Ptr(eb).Add(TensorDesc.Of(eb)).Ptr(y).Add(n);
        args.Launch(device, f, "where_select", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>
    /// A reduction over the last dim of <paramref name="x"/> (the caller moved the reduced dim last): kind 0 sum, 1 mean,
    /// 2 max, 3 min (values and indices), 4 argmax, 5 argmin. Values in <paramref name="outDType"/>, indices int64, both
    /// of <paramref name="outShape"/>.
    /// </summary>
    public static (Tensor Values, Tensor? Indices) RowReduce(Tensor x, int kind, bool withIndices, int[] outShape, DType outDType)
    {
        var device = DeviceOf("reduce", x);
        if (!x.DType.IsFloatingPoint()) throw NoCudaPath($"reduction over {x.DType.TorchName()}", x);
        var xc = x.Contiguous();
        int n = x.Size(-1);
        int rows = (int)Shape.NumEl(outShape);
        bool index = kind >= 4;
        var values = index ? null : CudaTensors.Empty(device, DType.Float32, outShape);
        var indices = index || (withIndices && kind is 2 or 3) ? CudaTensors.Empty(device, DType.Int64, outShape) : null;
        if (n == 0)
        {   // sum of nothing: 0; mean of nothing: NaN (torch); max/min of nothing were refused by the caller
            var z = CudaTensors.Zeros(device, DType.Float32, outShape);
            return (kind == 1 ? Ops.Elementwise.Div(z, z) : z, null);
        }
        var f = device.Function($"row_reduce/{CudaSource.Token(x.DType)}", "row_reduce", () => CudaSource.Instantiate(ModelKernels.RowReduce, x.DType));
        using (var args = new KernelArgs().Ptr(xc).Add(values is null ? 0 : CudaTensors.Address(values)).Add(indices is null ? 0 : CudaTensors.Address(indices)).Add(n).Add(kind))
            args.Launch(device, f, "row_reduce", ((uint)rows, 1, 1), (Threads, 1, 1));
        if (index) return (indices!, null);
        return (outDType == DType.Float32 ? values! : values!.To(outDType), indices);
    }

    /// <summary>Per row of x [.., n]: (mean, std with unbiased=False) computed in float64, rounded to float32, shape [.., 1].</summary>
    public static (Tensor Mean, Tensor Std) MeanStd(Tensor x)
    {
        var device = DeviceOf("mean_std", x);
        var xc = x.Contiguous();
        int n = x.Size(-1), rows = n == 0 ? 0 : x.NumEl / n;
        var shape = x.ShapeArray;
        shape[^1] = 1;
        var mean = CudaTensors.Empty(device, DType.Float32, shape);
        var std = CudaTensors.Empty(device, DType.Float32, shape);
        var f = device.Function($"mean_std/{CudaSource.Token(x.DType)}", "mean_std", () => CudaSource.Instantiate(ModelKernels.MeanStd, x.DType));
        using (var args = new KernelArgs().Ptr(xc).Ptr(mean).Ptr(std).Add(n))
            args.Launch(device, f, "mean_std", ((uint)rows, 1, 1), (Threads, 1, 1));
        return (mean, std);
    }

    /// <summary>
    /// The eager attention mask in place on contiguous float32 scores [planes, t, s] (causal from <paramref name="past"/>,
    /// a sliding <paramref name="window"/> (null: none), Gemma4's bidirectional vision <paramref name="blocks"/> of the t new
    /// rows, widening every layer (Gemma 3's rule) or, with <paramref name="blocksOnSlidingLayersOnly"/>, sliding layers only
    /// inside the window (Gemma 4's rule; see Gemma4VisionMask)).
    /// </summary>
    public static void AttentionMask(Tensor scores, int t, int s, int past, int? window, int[]? blocks = null, bool blocksOnSlidingLayersOnly = false)
    {
        var device = DeviceOf("attention_mask", scores);
        if (scores.DType != DType.Float32 || !scores.IsContiguous || scores.Size(-1) != s || scores.Size(-2) != t)
            throw new ArgumentException($"attention_mask: contiguous float32 scores [.., {t}, {s}], got {scores}");
        if (blocks is not null && blocks.Length != t) throw new ArgumentException($"attention_mask: {blocks.Length} block ids for {t} rows");
        var b = blocks is null ? null : CudaTensors.Upload(Tensor.FromArray(blocks, blocks.Length), device);
        long n = scores.NumEl;
        var f = device.Function("attention_mask", "attention_mask", () => CudaSource.Prelude + ModelKernels.AttentionMask);
        using var args = new KernelArgs().Ptr(scores).Add(t).Add(s).Add(past).Add(window ?? 0).Add(b is null ? 0 : CudaTensors.Address(b)).Add(blocksOnSlidingLayersOnly ? 1 : 0).Add(n);
        args.Launch(device, f, "attention_mask", GridFor(device, n), (Threads, 1, 1));
    }

    /// <summary>
    /// x.index_select(dim, ids) with ids already checked and wrapped into [0, size) (host values); an id of -1 gives a zero
    /// slice (rows a rank does not hold). Output contiguous, x's dtype.
    /// </summary>
    public static Tensor IndexSelect(Tensor x, int dim, long[] ids)
    {
        var device = DeviceOf("index_select", x);
        var shape = x.ShapeArray;
        shape[dim] = ids.Length;
        var y = CudaTensors.Empty(device, x.DType, shape);
        long n = y.NumEl;
        if (n == 0) return y;
        var d = TensorDesc.Of(x);
        unsafe { d.Shape[dim] = ids.Length; }
        var idt = CudaTensors.Upload(Tensor.FromArray(ids, ids.Length), device);
        var elem = ElemType(x.DType);
        var f = device.Function("index_select/" + elem, "index_select", () => CudaSource.Prelude + ModelKernels.IndexSelect.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(x).Add(d).Ptr(idt).Add(dim).Ptr(y).Add(n);
        args.Launch(device, f, "index_select", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>x.gather(dim, index) with index values (host, row-major of index's shape) checked and wrapped.</summary>
    public static Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape)
    {
        var device = DeviceOf("gather", x);
        var y = CudaTensors.Empty(device, x.DType, indexShape);
        long n = y.NumEl;
        if (n == 0) return y;
        var d = TensorDesc.Of(x);
        unsafe { for (int k = 0; k < indexShape.Length; k++) d.Shape[k] = indexShape[k]; }
        var idt = CudaTensors.Upload(Tensor.FromArray(index, index.Length), device);
        var elem = ElemType(x.DType);
        var f = device.Function("gather/" + elem, "gather", () => CudaSource.Prelude + ModelKernels.Gather.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(x).Add(d).Ptr(idt).Add(dim).Ptr(y).Add(n);
        args.Launch(device, f, "gather", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>im2col of Conv2d(3x3, stride 2, padding 1) on channels-last x [B, H, W, C] -> [B*Ho*Wo, C*9] (Ho = ceil(H/2)).</summary>
    public static Tensor Im2Col3x3S2(Tensor x)
    {
        var device = DeviceOf("im2col3x3s2", x);
        var xc = x.Contiguous();
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), c = x.Size(3);
        int ho = (h + 2 - 3) / 2 + 1, wo = (w + 2 - 3) / 2 + 1;
        var y = CudaTensors.Empty(device, x.DType, b * ho * wo, c * 9);
        long n = y.NumEl;
        var elem = ElemType(x.DType);
        var f = device.Function("im2col3x3s2/" + elem, "im2col3x3s2", () => CudaSource.Prelude + ModelKernels.Im2Col3x3S2.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(xc).Ptr(y).Add(b).Add(h).Add(w).Add(c).Add(ho).Add(wo).Add(n);
        args.Launch(device, f, "im2col3x3s2", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>Depthwise causal conv1d: x [B, T, C], weight [C, 1, K] -> [B, T, C] in x's dtype (float32 sums, one rounding).</summary>
    public static Tensor DepthwiseCausalConv1d(Tensor x, Tensor weight)
    {
        var device = DeviceOf("dw_causal_conv1d", x, weight);
        var xc = x.Contiguous();
        var wc = weight.ToDevice(device).Contiguous();
        int t = x.Size(1), c = x.Size(2), k = weight.Size(2);
        var y = CudaTensors.Empty(device, x.DType, x.ShapeArray);
        long n = y.NumEl;
        var f = device.Function($"dw_causal_conv1d/{CudaSource.Token(x.DType)}/{CudaSource.Token(wc.DType)}", "dw_causal_conv1d",
            () => CudaSource.Instantiate(ModelKernels.DepthwiseCausalConv1d, x.DType, x.DType, wc.DType));
        using var args = new KernelArgs().Ptr(xc).Ptr(wc).Ptr(y).Add(t).Add(c).Add(k).Add(n);
        args.Launch(device, f, "dw_causal_conv1d", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>Gemma4 audio context windows: x [B, T, N, H] -> [B, N, U, C, H], window u at positions u*W - left + c.</summary>
    public static Tensor ContextWindows(Tensor x, int u, int w, int ctx, int left)
    {
        var device = DeviceOf("context_windows", x);
        var xc = x.Contiguous();
        int b = x.Size(0), t = x.Size(1), nh = x.Size(2), hd = x.Size(3);
        var y = CudaTensors.Empty(device, x.DType, b, nh, u, ctx, hd);
        long n = y.NumEl;
        var elem = ElemType(x.DType);
        var f = device.Function("context_windows/" + elem, "context_windows", () => CudaSource.Prelude + ModelKernels.ContextWindows.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(xc).Ptr(y).Add(t).Add(nh).Add(u).Add(w).Add(ctx).Add(hd).Add(left).Add(n);
        args.Launch(device, f, "context_windows", GridFor(device, n), (Threads, 1, 1));
        return y;
    }
}
