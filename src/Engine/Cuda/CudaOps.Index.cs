using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>The lookup and gather drivers: embedding, index_select, gather, Gemma4 audio context windows (bits copied).</summary>
public static partial class CudaOps
{
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

    /// <summary>
    /// x.index_select(0, ids) with device ids int64 [n] that are in range by construction (a top-k's indices), never read
    /// back or checked (a CUDA graph step: the router's per_expert_scale[top_k_index]); the same kernel as
    /// <see cref="IndexSelect(Tensor, int, long[])"/>. Output contiguous [n, ...], x's dtype.
    /// </summary>
    public static Tensor IndexSelectAt(Tensor x, Tensor ids)
    {
        var device = DeviceOf("index_select (device ids)", x, ids);
        if (x.Rank < 1 || ids.Rank != 1 || ids.DType != DType.Int64)
            throw new ArgumentException($"index_select (device ids): x [E, ...] and int64 ids [n], got {x} and {ids}");
        var shape = x.ShapeArray;
        shape[0] = ids.NumEl;
        var y = CudaTensors.Empty(device, x.DType, shape);
        long n = y.NumEl;
        if (n == 0) return y;
        var d = TensorDesc.Of(x);
        unsafe { d.Shape[0] = ids.NumEl; }
        var idc = ids.Contiguous();
        var elem = ElemType(x.DType);
        var f = device.Function("index_select/" + elem, "index_select", () => CudaSource.Prelude + IndexKernels.IndexSelect.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(x).Add(d).Ptr(idc).Add(0).Ptr(y).Add(n);
        args.Launch(device, f, "index_select", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>
    /// x.index_select(dim, ids) with ids already checked and wrapped into [0, size) (host values); an id of -1 gives a zero
    /// slice (rows a rank does not hold). Output contiguous, x's dtype.
    /// </summary>
    public static Tensor IndexSelect(Tensor x, int dim, long[] ids)
    {
        var device = FirstDeviceOf("index_select", x);
        var shape = x.ShapeArray;
        shape[dim] = ids.Length;
        var y = CudaTensors.Empty(device, x.DType, shape);
        long n = y.NumEl;
        if (n == 0) return y;
        var d = TensorDesc.Of(x);
        unsafe { d.Shape[dim] = ids.Length; }
        var idt = CudaTensors.Upload(Tensor.FromArray(ids, ids.Length), device);
        var elem = ElemType(x.DType);
        var f = device.Function("index_select/" + elem, "index_select", () => CudaSource.Prelude + IndexKernels.IndexSelect.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(x).Add(d).Ptr(idt).Add(dim).Ptr(y).Add(n);
        args.Launch(device, f, "index_select", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>x.gather(dim, index) with index values (host, row-major of index's shape) checked and wrapped.</summary>
    public static Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape)
    {
        var device = FirstDeviceOf("gather", x);
        var y = CudaTensors.Empty(device, x.DType, indexShape);
        long n = y.NumEl;
        if (n == 0) return y;
        var d = TensorDesc.Of(x);
        unsafe { for (int k = 0; k < indexShape.Length; k++) d.Shape[k] = indexShape[k]; }
        var idt = CudaTensors.Upload(Tensor.FromArray(index, index.Length), device);
        var elem = ElemType(x.DType);
        var f = device.Function("gather/" + elem, "gather", () => CudaSource.Prelude + IndexKernels.Gather.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(x).Add(d).Ptr(idt).Add(dim).Ptr(y).Add(n);
        args.Launch(device, f, "gather", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>Gemma4 audio context windows: x [B, T, N, H] -> [B, N, U, C, H], window u at positions u*W - left + c.</summary>
    public static Tensor ContextWindows(Tensor x, int u, int w, int ctx, int left)
    {
        var device = FirstDeviceOf("context_windows", x);
        var xc = x.Contiguous();
        int b = x.Size(0), t = x.Size(1), nh = x.Size(2), hd = x.Size(3);
        var y = CudaTensors.Empty(device, x.DType, b, nh, u, ctx, hd);
        long n = y.NumEl;
        var elem = ElemType(x.DType);
        var f = device.Function("context_windows/" + elem, "context_windows", () => CudaSource.Prelude + IndexKernels.ContextWindows.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(xc).Ptr(y).Add(t).Add(nh).Add(u).Add(w).Add(ctx).Add(hd).Add(left).Add(n);
        args.Launch(device, f, "context_windows", GridFor(device, n), (Threads, 1, 1));
        return y;
    }
}
