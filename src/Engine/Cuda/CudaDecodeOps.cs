using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// Drivers of <see cref="DecodeKernels"/>: the ops of a decode step that read the position from device memory (an int32
/// [1] tensor <c>pos</c>), for steps captured into a CUDA graph. Nothing here reads a device value back to the host.
/// </summary>
public static class CudaDecodeOps
{
    private const int Threads = 256;

    private static string Elem(DType dtype) => dtype.Size() switch
    {
        1 => "unsigned char", 2 => "unsigned short", 4 => "unsigned int", 8 => "unsigned long long",
        _ => throw new NotSupportedException(dtype.ToString()),
    };

    private static void RequirePos(Tensor pos, string op)
    {
        if (!pos.IsCuda || pos.DType != DType.Int32 || pos.NumEl != 1)
            throw new ArgumentException($"{op}: the position must be a device int32 tensor of one element, got {pos}");
    }

    /// <summary>(cos[p:p+rows], sin[p:p+rows]) of contiguous [P, d] tables at p = *pos (+ *offset when given: Qwen2-VL's
    /// rope_deltas), as [1, rows, d] contiguous tensors.</summary>
    public static (Tensor Cos, Tensor Sin) RowsAt(Tensor cosTable, Tensor sinTable, Tensor pos, int rows, Tensor? offset = null)
    {
        RequirePos(pos, "rows_at");
        if (offset is not null) RequirePos(offset, "rows_at (offset)");
        var device = cosTable.CudaDevice;
        if (!cosTable.IsContiguous || !sinTable.IsContiguous || cosTable.Rank != 2 || !Shape.SequenceEqual(cosTable.Shape, sinTable.Shape)
            || cosTable.DType != sinTable.DType)
            throw new ArgumentException($"rows_at: two contiguous [P, d] tables of one dtype, got {cosTable} and {sinTable}");
        int d = cosTable.Size(1);
        var c = CudaTensors.Empty(device, cosTable.DType, 1, rows, d);
        var s = CudaTensors.Empty(device, cosTable.DType, 1, rows, d);
        var elem = Elem(cosTable.DType);
        var f = device.Function("rows_at/" + elem, "rows_at", () => CudaSource.Prelude + DecodeKernels.RowsAt.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(cosTable).Ptr(sinTable).Ptr(pos).Add(offset is null ? 0 : CudaTensors.Address(offset)).Ptr(c).Ptr(s).Add(rows).Add(d);
        args.Launch(device, f, "rows_at", ((uint)Math.Max(1, Math.Min(64, (rows * d + Threads - 1) / Threads)), 1, 1), (Threads, 1, 1));
        return (c, s);
    }

    /// <summary>k, v [kv, t, hd] written into rows [pos, pos + t) of the contiguous caches [kv, cap, hd].</summary>
    public static void AppendAt(Tensor cacheK, Tensor cacheV, Tensor k, Tensor v, Tensor pos)
    {
        RequirePos(pos, "kv_append_at");
        var device = cacheK.CudaDevice;
        if (!cacheK.IsContiguous || !cacheV.IsContiguous || k.Rank != 3 || !Shape.SequenceEqual(k.Shape, v.Shape) || k.Size(0) != cacheK.Size(0)
            || k.Size(2) != cacheK.Size(2) || k.DType != cacheK.DType || v.DType != cacheK.DType)
            throw new ArgumentException($"kv_append_at: k, v [kv, t, hd] into caches [kv, cap, hd] of one dtype; got {k}, {v} into {cacheK}");
        long n = k.NumEl;
        var elem = Elem(k.DType);
        var f = device.Function("kv_append_at/" + elem, "kv_append_at", () => CudaSource.Prelude + DecodeKernels.KvAppendAt.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(k).Add(TensorDesc.Of(k)).Ptr(v).Add(TensorDesc.Of(v)).Ptr(cacheK).Ptr(cacheV).Ptr(pos)
            .Add(cacheK.Size(1)).Add(n);
        args.Launch(device, f, "kv_append_at", ((uint)Math.Max(1, Math.Min(64, (n + Threads - 1) / Threads)), 1, 1), (Threads, 1, 1));
    }

    /// <summary>
    /// Rope of q [heads, t, hd] and k [kv, t, hd] with cos/sin [.., t, hd] (contiguous, q's dtype), the rotated k and v
    /// written into rows [pos, pos + t) of the contiguous caches [kv, cap, hd]: returns rotated q, contiguous [heads, t, hd].
    /// </summary>
    public static Tensor RopeAppendAt(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor cacheK, Tensor cacheV, Tensor pos)
    {
        RequirePos(pos, "rope_append_at");
        var device = q.CudaDevice;
        int t = k.Size(1), d = k.Size(2);
        if (q.Rank != 3 || k.Rank != 3 || !Shape.SequenceEqual(k.Shape, v.Shape) || q.Size(1) != t || q.Size(2) != d || d % 2 != 0
            || cos.NumEl != t * d || sin.NumEl != t * d || !cos.IsContiguous || !sin.IsContiguous || cos.DType != q.DType || sin.DType != q.DType
            || !cacheK.IsContiguous || !cacheV.IsContiguous || cacheK.Size(0) != k.Size(0) || cacheK.Size(2) != d
            || k.DType != q.DType || v.DType != q.DType || cacheK.DType != q.DType || cacheV.DType != q.DType)
            throw new ArgumentException($"rope_append_at: q [heads, t, d], k, v [kv, t, d], cos/sin [t, d] contiguous, caches [kv, cap, d], one dtype; got {q}, {k}, {v}, {cos}, {cacheK}");
        var qout = CudaTensors.Empty(device, q.DType, q.ShapeArray);
        long nq = q.NumEl, nk = k.NumEl;
        var f = device.Function($"rope_append_at/{CudaSource.Token(q.DType)}", "rope_append_at", () => CudaSource.Instantiate(DecodeKernels.RopeAppendAt, q.DType));
        using var args = new KernelArgs().Ptr(q).Add(TensorDesc.Of(q)).Ptr(k).Add(TensorDesc.Of(k)).Ptr(v).Add(TensorDesc.Of(v)).Ptr(cos).Ptr(sin)
            .Ptr(qout).Ptr(cacheK).Ptr(cacheV).Ptr(pos).Add(cacheK.Size(1)).Add(nq).Add(nk);
        long n = nq + 2 * nk;
        args.Launch(device, f, "rope_append_at", ((uint)Math.Max(1, Math.Min(device.Multiprocessors * 4L, (n + Threads - 1) / Threads)), 1, 1), (Threads, 1, 1));
        return qout;
    }

    /// <summary>
    /// <see cref="CudaOps.Attention"/> with past = *pos and past + t keys of k, v [kv, cap, hd] (views of the whole cache).
    /// </summary>
    /// <param name="simple">The one-thread-per-key kernel (attention_at) instead of the tiled one (same bits; the check
    /// compares both).</param>
    public static Tensor AttentionAt(Tensor q, Tensor k, Tensor v, Tensor pos, int window, float scale, bool simple = false)
    {
        RequirePos(pos, "attention_at");
        var device = q.CudaDevice;
        if (q.Rank != 3 || k.Rank != 3 || v.Rank != 3 || k.Size(2) != q.Size(2) || v.Size(2) != q.Size(2) || k.Size(0) != v.Size(0)
            || k.Size(1) != v.Size(1) || q.Size(0) % k.Size(0) != 0 || q.DType != k.DType || q.DType != v.DType)
            throw new ArgumentException($"attention_at: q [heads, t, hd], k and v [kv, cap, hd] with heads % kv == 0 and one dtype; got {q}, {k}, {v}");
        int cap = k.Size(1), hd = q.Size(2), es = q.DType.Size();
        var y = CudaTensors.Empty(device, q.DType, q.ShapeArray);
        if (hd <= 256 && !simple)
        {   // the tiled kernel: same bits, keys and values through shared memory
            bool vec = k.Strides[2] == 1 && v.Strides[2] == 1 && hd % (16 / es) == 0 && k.Strides[1] % (16 / es) == 0 && v.Strides[1] % (16 / es) == 0
                       && k.Strides[0] % (16 / es) == 0 && v.Strides[0] % (16 / es) == 0 && CudaTensors.Address(k) % 16 == 0 && CudaTensors.Address(v) % 16 == 0;
            var ft = device.Function($"attention_tiled_at/{CudaSource.Token(q.DType)}", "attention_tiled_at", () => CudaSource.Instantiate(
                DecodeKernels.AttentionTiledAt.Replace("TILES", DecodeKernels.TileFloats.ToString(System.Globalization.CultureInfo.InvariantCulture))
                    .Replace("ESZ", es.ToString(System.Globalization.CultureInfo.InvariantCulture)), q.DType));
            uint dyn = (uint)(cap * sizeof(float));
            if (dyn + (DecodeKernels.TileFloats + 256 + 32) * sizeof(float) > 48 * 1024) Interop.CudaDriver.FuncSetMaxDynamicShared(ft, (int)dyn, "attention_tiled_at");
            using var targs = new KernelArgs().Ptr(q).Add(TensorDesc.Of(q)).Ptr(k).Add(TensorDesc.Of(k)).Ptr(v).Add(TensorDesc.Of(v)).Ptr(y)
                .Ptr(pos).Add(window).Add(scale).Add(vec ? 1 : 0);
            targs.Launch(device, ft, "attention_tiled_at", ((uint)q.Size(1), (uint)q.Size(0), 1), (128, 1, 1), dyn);
            return y;
        }
        var f = device.Function($"attention_at/{CudaSource.Token(q.DType)}", "attention_at", () => CudaSource.Instantiate(DecodeKernels.AttentionAt(), q.DType));
        uint shared = (uint)(cap * sizeof(float));                         // room for every key the cache can hold
        if (shared > 48 * 1024) Interop.CudaDriver.FuncSetMaxDynamicShared(f, (int)shared, "attention_at");
        using var args = new KernelArgs().Ptr(q).Add(TensorDesc.Of(q)).Ptr(k).Add(TensorDesc.Of(k)).Ptr(v).Add(TensorDesc.Of(v)).Ptr(y)
            .Ptr(pos).Add(window).Add(scale);
        args.Launch(device, f, "attention_at", ((uint)q.Size(1), (uint)q.Size(0), 1), (128, 1, 1), shared);
        return y;
    }

    /// <summary>Rows of a contiguous [vocab, hidden] device table for device int64 ids [rows], with no read-back (ids from our own argmax).</summary>
    public static Tensor EmbeddingUnchecked(Tensor weight, Tensor ids, Tensor scratchInt32)
    {
        var device = weight.CudaDevice;
        if (!ids.IsCuda || ids.DType != DType.Int64 || !ids.IsContiguous || !weight.IsContiguous || weight.Rank != 2)
            throw new ArgumentException($"embedding (device ids): contiguous int64 device ids and a contiguous [vocab, hidden] table, got {ids} and {weight}");
        int rows = ids.NumEl, hidden = weight.Size(1), vocab = weight.Size(0);
        var y = CudaTensors.Empty(device, weight.DType, [.. ids.ShapeArray, hidden]);
        var elem = Elem(weight.DType);
        var f = device.Function($"embedding/{weight.DType.Size()}", "embedding", () => CudaSource.Prelude + IndexKernels.Embedding.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(weight).Ptr(ids).Ptr(y).Add(rows).Add(hidden).Add(vocab).Ptr(scratchInt32);
        args.Launch(device, f, "embedding", ((uint)rows, 1, 1), (Threads, 1, 1));
        return y;
    }

    /// <summary>
    /// Device ids [rows] (int64) rewritten without a read-back (<see cref="DecodeKernels.IdsMap"/>): inside = lo &lt;= id &lt; hi;
    /// ids kept where inside (<paramref name="fillInside"/> false) or outside (true), <paramref name="fill"/> elsewhere, minus
    /// <paramref name="shift"/>. Returns the new ids [rows] and the bool mask of inside [rows].
    /// </summary>
    public static (Tensor Ids, Tensor Inside) IdsMap(Tensor ids, long lo, long hi, long fill, bool fillInside, long shift = 0)
    {
        if (!ids.IsCuda || ids.DType != DType.Int64 || !ids.IsContiguous || ids.Rank != 1)
            throw new ArgumentException($"ids_map: contiguous int64 device ids [rows], got {ids}");
        var device = ids.CudaDevice;
        int rows = ids.NumEl;
        var output = CudaTensors.Empty(device, DType.Int64, rows);
        var mask = CudaTensors.Empty(device, DType.Bool, rows);
        var f = device.Function("ids_map", "ids_map", () => CudaSource.Prelude + DecodeKernels.IdsMap);
        using var args = new KernelArgs().Ptr(ids).Ptr(output).Ptr(mask).Add(rows).Add(lo).Add(hi).Add(fill).Add(fillInside ? 1 : 0).Add(shift);
        args.Launch(device, f, "ids_map", ((uint)Math.Max(1, Math.Min(64, (rows + Threads - 1) / Threads)), 1, 1), (Threads, 1, 1));
        return (output, mask);
    }

    /// <summary>*pos += tokens; *id = *pick (int64 [1] device tensors).</summary>
    public static void Advance(Tensor pos, Tensor id, Tensor pick, int tokens)
    {
        RequirePos(pos, "advance");
        var device = pos.CudaDevice;
        if (!id.IsCuda || !pick.IsCuda || id.DType != DType.Int64 || pick.DType != DType.Int64)
            throw new ArgumentException($"advance: int64 device id and pick, got {id} and {pick}");
        var f = device.Function("advance", "advance", () => CudaSource.Prelude + DecodeKernels.Advance);
        using var args = new KernelArgs().Ptr(pos).Ptr(id).Ptr(pick).Add(tokens);
        args.Launch(device, f, "advance", (1, 1, 1), (32, 1, 1));
    }
}
