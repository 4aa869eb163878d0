using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>The row drivers: one block per row of the last dim (norms, softmax, reductions, mean/std, top-k); batch-invariant.</summary>
public static partial class CudaOps
{
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

    /// <summary>
    /// A reduction over the last dim of <paramref name="x"/> (the caller moved the reduced dim last): kind 0 sum, 1 mean,
    /// 2 max, 3 min (values and indices), 4 argmax, 5 argmin. Values in <paramref name="outDType"/>, indices int64, both
    /// of <paramref name="outShape"/>.
    /// </summary>
    public static (Tensor Values, Tensor? Indices) RowReduce(Tensor x, int kind, bool withIndices, int[] outShape, DType outDType)
    {
        var device = FirstDeviceOf("reduce", x);
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
            return (kind == 1 ? Binary<DivOp>(z, z, DType.Float32) : z, null);
        }
        var f = device.Function($"row_reduce/{CudaSource.Token(x.DType)}", "row_reduce", () => CudaSource.Instantiate(RowKernels.RowReduce, x.DType));
        using (var args = new KernelArgs().Ptr(xc).Add(values is null ? 0 : CudaTensors.Address(values)).Add(indices is null ? 0 : CudaTensors.Address(indices)).Add(n).Add(kind))
            args.Launch(device, f, "row_reduce", ((uint)rows, 1, 1), (Threads, 1, 1));
        if (index) return (indices!, null);
        return (outDType == DType.Float32 ? values! : values!.To(outDType), indices);
    }

    /// <summary>Per row of x [.., n]: (mean, std with unbiased=False) computed in float64, rounded to float32, shape [.., 1].</summary>
    public static (Tensor Mean, Tensor Std) MeanStd(Tensor x)
    {
        var device = FirstDeviceOf("mean_std", x);
        var xc = x.Contiguous();
        int n = x.Size(-1), rows = n == 0 ? 0 : x.NumEl / n;
        var shape = x.ShapeArray;
        shape[^1] = 1;
        var mean = CudaTensors.Empty(device, DType.Float32, shape);
        var std = CudaTensors.Empty(device, DType.Float32, shape);
        var f = device.Function($"mean_std/{CudaSource.Token(x.DType)}", "mean_std", () => CudaSource.Instantiate(RowKernels.MeanStd, x.DType));
        using (var args = new KernelArgs().Ptr(xc).Ptr(mean).Ptr(std).Add(n))
            args.Launch(device, f, "mean_std", ((uint)rows, 1, 1), (Threads, 1, 1));
        return (mean, std);
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
        var f = device.Function($"topk/{CudaSource.Token(x.DType)}", "topk", () => CudaSource.Instantiate(RowKernels.TopK, x.DType));
        using (var args = new KernelArgs().Ptr(xc).Ptr(values).Ptr(indices).Add(n).Add(k))
            args.Launch(device, f, "topk", ((uint)rows, 1, 1), (Threads, 1, 1));
        return (x.DType == DType.Float32 ? values : Copy(values, x.DType), indices);
    }

    /// <summary>
    /// y [slots, n] (float) summed into [1, n] in ascending (ids[s], s) order with the ids int64 [slots] read on the
    /// device, each add rounded to y's dtype (<see cref="RowKernels.SumInIdOrder"/>): HF's index_add_ of one token's experts.
    /// </summary>
    public static Tensor SumInIdOrder(Tensor y, Tensor ids)
    {
        var device = DeviceOf("sum_in_id_order", y, ids);
        RequireFloat(y, "sum_in_id_order");
        if (y.Rank != 2 || ids.Rank != 1 || ids.DType != DType.Int64 || ids.Size(0) != y.Size(0))
            throw new ArgumentException($"sum_in_id_order: y [slots, n] and int64 ids [slots], got {y} and {ids}");
        var yc = y.Contiguous();
        var idc = ids.Contiguous();
        int slots = y.Size(0), n = y.Size(1);
        var sum = CudaTensors.Empty(device, y.DType, 1, n);
        if (n == 0) return sum;
        var f = device.Function($"sum_in_id_order/{CudaSource.Token(y.DType)}", "sum_in_id_order", () => CudaSource.Instantiate(RowKernels.SumInIdOrder, y.DType));
        using (var args = new KernelArgs().Ptr(yc).Ptr(idc).Ptr(sum).Add(slots).Add(n))
            args.Launch(device, f, "sum_in_id_order", ((uint)Math.Min((n + Threads - 1) / Threads, device.Multiprocessors * 4), 1, 1), (Threads, 1, 1));
        return sum;
    }
}
