namespace Harness.Engine.Tensors;

/// <summary>
/// The primitives a <see cref="Tensor"/> needs from the place its bytes live: one object per device (the host's is
/// <see cref="HostBackend.Instance"/>; a GPU's comes with its memory, <see cref="IDeviceMemory.Backend"/>). The tensor
/// looks its backend up from its storage once per call (<see cref="Tensor.Backend"/>) and never names a device API, so
/// the Tensors layer sits below every device: a device backend depends on tensors, not the other way round.
/// Arguments arrive checked and wrapped (ids in [0, size)); the backend only moves bytes.
/// </summary>
public interface ITensorBackend
{
    /// <summary>torch's device string: "cpu", "cuda:0".</summary>
    string Name { get; }

    /// <summary>A zero-filled contiguous tensor on this device.</summary>
    Tensor Zeros(DType dtype, int[] shape);

    /// <summary>A contiguous copy of <paramref name="src"/> (on this device, any strides) in <paramref name="dtype"/>, on this device.</summary>
    Tensor Copy(Tensor src, DType dtype);

    /// <summary>
    /// <see cref="Copy"/> for a tensor the caller keeps past the current step (a layer's cached weight): on a device it
    /// never comes from a step's scratch allocator (a CUDA graph step's arena is reused by the next step).
    /// </summary>
    Tensor CopyToKeep(Tensor src, DType dtype);

    /// <summary>dst.copy_(src): one shape (src already expanded), dtype converted; called on the backend of whichever side is
    /// not the host (either may be on the host).</summary>
    void CopyInto(Tensor src, Tensor dst);

    /// <summary>A contiguous host copy of <paramref name="t"/> (on this device).</summary>
    Tensor ToHost(Tensor t);

    /// <summary>x.index_select(dim, ids), ids wrapped into [0, size); -1 gives a zero slice. Contiguous, x's dtype.</summary>
    Tensor IndexSelect(Tensor x, int dim, long[] ids);

    /// <summary>x.gather(dim, index) with index values (row-major of <paramref name="indexShape"/>) wrapped into [0, size).</summary>
    Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape);
}

/// <summary>Memory a device backend allocated (a <see cref="Storage"/> over it reads as device memory).</summary>
public interface IDeviceMemory : IDisposable
{
    long Bytes { get; }

    /// <summary>The backend of the device this memory is on.</summary>
    ITensorBackend Backend { get; }

    /// <summary>
    /// The bytes [byteOffset, byteOffset + byteLength) of this allocation as memory of their own, which keeps this one
    /// alive and is never freed itself: a view of a tensor past 2^31 - 1 bytes (<see cref="Storage.Window"/>) indexes
    /// its window with int offsets, on a device as on the host (rank 1's half of a tied 262144 x 2816 float32 table).
    /// </summary>
    IDeviceMemory Slice(long byteOffset, long byteLength) =>
        throw new NotSupportedException($"{Backend.Name} memory has no windows: a view past 2^31 - 1 bytes cannot be taken there");
}

/// <summary>The host's backend: managed or mapped memory, read and written from C#.</summary>
public sealed class HostBackend : ITensorBackend
{
    public static readonly HostBackend Instance = new();

    private HostBackend() { }

    public string Name => "cpu";

    public Tensor Zeros(DType dtype, int[] shape) => Tensor.Zeros(dtype, shape);

    public Tensor Copy(Tensor src, DType dtype)
    {
        var t = Tensor.Zeros(dtype, src.ShapeArray);
        t.CopyFromHost(src);
        return t;
    }

    public Tensor CopyToKeep(Tensor src, DType dtype) => Copy(src, dtype);

    public void CopyInto(Tensor src, Tensor dst) => dst.CopyFromHost(src);

    public Tensor ToHost(Tensor t) => t;

    public Tensor IndexSelect(Tensor x, int dim, long[] ids)
    {
        var shape = x.ShapeArray;
        shape[dim] = ids.Length;
        var result = Tensor.Zeros(x.DType, shape);
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] >= 0) result.Narrow(dim, i, 1).CopyFromHost(x.Narrow(dim, (int)ids[i], 1));
        return result;
    }

    public Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape)
    {
        var result = Tensor.Zeros(x.DType, indexShape);
        int rank = x.Rank;
        var idx = new int[rank];
        int es = x.DType.Size();
        for (int flat = 0; flat < index.Length; flat++)
        {
            int rem = flat;
            for (int i = rank - 1; i >= 0; i--) { idx[i] = rem % indexShape[i]; rem /= indexShape[i]; }
            idx[dim] = (int)index[flat];
            long src = x.LongOffsetOf(idx);
            x.Storage.Span(src * es, es).CopyTo(result.Storage.Bytes.Slice(flat * es, es));
        }
        return result;
    }
}
