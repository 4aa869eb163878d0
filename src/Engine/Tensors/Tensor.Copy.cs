using System.Runtime.InteropServices;

namespace Harness.Engine.Tensors;

/// <summary>Copies, dtype conversion, concatenation and indexed gathers.</summary>
public sealed partial class Tensor
{
    /// <summary>Storage offsets of every element, in row-major logical order.</summary>
    public IEnumerable<int> StridedOffsets()
    {
        int n = NumEl;
        if (n == 0) yield break;
        int rank = Rank;
        if (rank == 0) { yield return Offset; yield break; }
        var idx = new int[rank];
        int off = Offset;
        for (int count = 0; count < n; count++)
        {
            yield return off;
            for (int d = rank - 1; d >= 0; d--)
            {
                idx[d]++;
                off += _strides[d];
                if (idx[d] < _shape[d]) break;
                off -= _strides[d] * _shape[d];
                idx[d] = 0;
            }
        }
    }

    /// <summary>
    /// Calls <paramref name="row"/> for each innermost row: (storage offset of its first element, its stride).
    /// Every strided kernel walks tensors this way, so the hot inner loop sees a plain stride.
    /// </summary>
    public void ForEachRow(Action<int, int> row)
    {
        if (NumEl == 0) return;
        if (Rank == 0) { row(Offset, 1); return; }
        int outer = NumEl / _shape[^1];
        int rank = Rank;
        var idx = new int[rank];
        int off = Offset;
        for (int r = 0; r < outer; r++)
        {
            row(off, _strides[^1]);
            for (int d = rank - 2; d >= 0; d--)
            {
                idx[d]++;
                off += _strides[d];
                if (idx[d] < _shape[d]) break;
                off -= _strides[d] * _shape[d];
                idx[d] = 0;
            }
        }
    }

    /// <summary>This tensor if already contiguous, else a contiguous copy.</summary>
    public Tensor Contiguous() => IsContiguous ? this : Clone();

    /// <summary>A contiguous copy with its own storage.</summary>
    public Tensor Clone() => Backend.Copy(this, DType);

    /// <summary>Copies src into this view, converting dtype and broadcasting src to this shape (torch's copy_).</summary>
    public void CopyFrom(Tensor src)
    {
        if (!Tensors.Shape.SequenceEqual(src.Shape, Shape)) src = src.Expand(ShapeArray);
        (Backend is HostBackend ? src.Backend : Backend).CopyInto(src, this);   // the device side's backend, if any
    }

    /// <summary><see cref="CopyFrom"/> between host tensors of one shape (the host backend's copy).</summary>
    internal void CopyFromHost(Tensor src)
    {
        if (src.DType == DType && src.IsContiguous && IsContiguous)
        {
            int es = DType.Size();
            int bytes = checked(NumEl * es);
            src.Storage.Span((long)src.Offset * es, bytes).CopyTo(Storage.Span((long)Offset * es, bytes));
            return;
        }
        if (DType == DType.Float32 && src.DType == DType.BFloat16 && IsContiguous && src.IsContiguous)
        {
            BFloat16.ToFloat(src.Span<ushort>(), Span<float>());
            return;
        }
        if (DType == DType.BFloat16 && src.DType == DType.Float32 && IsContiguous && src.IsContiguous)
        {
            BFloat16.FromFloat(src.Span<float>(), Span<ushort>());
            return;
        }
        if (src.DType == DType && IsContiguous && Rank > 0)
        {
            CopyRowsFrom(src);
            return;
        }
        using var d = StridedOffsets().GetEnumerator();
        foreach (var so in src.StridedOffsets())
        {
            d.MoveNext();
            CopyElement(src, so, d.Current);
        }
    }

    // Same dtype into a contiguous destination (every Contiguous() of a transposed or expanded view): walk the source's
    // innermost rows with their stride, element by element in the element's own type.
    private void CopyRowsFrom(Tensor src)
    {
        switch (DType.Size())
        {
            case 1: CopyRowsFrom<byte>(src); break;
            case 2: CopyRowsFrom<ushort>(src); break;
            case 4: CopyRowsFrom<int>(src); break;
            case 8: CopyRowsFrom<long>(src); break;
            default: throw new InvalidOperationException($"no row copy for {DType.Size()}-byte elements");
        }
    }

    private void CopyRowsFrom<T>(Tensor src) where T : unmanaged
    {
        var from = src.Storage.As<T>();
        var to = Storage.As<T>().Slice(Offset, NumEl);
        int inner = _shape[^1], stride = src._strides[^1], pos = 0;
        foreach (int row in src.RowOffsets())
        {
            if (stride == 1) from.Slice(row, inner).CopyTo(to.Slice(pos, inner));
            else for (int i = 0; i < inner; i++) to[pos + i] = from[row + i * stride];
            pos += inner;
        }
    }

    /// <summary>Storage offsets of the first element of each innermost row, in row-major order.</summary>
    private int[] RowOffsets()
    {
        int inner = _shape[^1];
        var rows = new int[inner == 0 ? 0 : NumEl / inner];
        int i = 0;
        ForEachRow((offset, _) => rows[i++] = offset);
        return rows;
    }

    private void CopyElement(Tensor src, int srcOff, int dstOff)
    {
        if (src.DType == DType)
        {
            int es = DType.Size();
            src.Storage.Span((long)srcOff * es, es).CopyTo(Storage.Span((long)dstOff * es, es));
        }
        else if (DType == DType.BFloat16 && src.DType == DType.Float32)
        {
            Storage.As<ushort>()[dstOff] = BFloat16.FromFloat(src.Storage.As<float>()[srcOff]);
        }
        else if (DType is DType.Int64 && src.DType is DType.Int64 or DType.Int32)
        {
            Storage.As<long>()[dstOff] = src.DType == DType.Int64 ? src.Storage.As<long>()[srcOff] : src.Storage.As<int>()[srcOff];
        }
        else
        {
            WriteFromDouble(dstOff, src.ReadAsDouble(srcOff));
        }
    }

    /// <summary>
    /// A copy in another dtype (this tensor when the dtype already matches, as torch's .to does).
    /// float32 -> bfloat16 rounds to nearest even, bit-exact with torch.
    /// </summary>
    public Tensor To(DType dtype)
    {
        if (dtype == DType) return this;
        return Backend.Copy(this, dtype);
    }

    /// <summary>All elements as float32 in row-major order (a new array).</summary>
    public float[] ToFloatArray()
    {
        var c = ToHost().To(DType.Float32).Contiguous();                 // ToHost: this tensor on the host, else a download
        return c.Span<float>().ToArray();
    }

    public double[] ToDoubleArray()
    {
        var h = ToHost();
        var result = new double[h.NumEl];
        int i = 0;
        foreach (var off in h.StridedOffsets()) result[i++] = h.ReadAsDouble(off);
        return result;
    }

    public long[] ToInt64Array()
    {
        var h = ToHost();
        var result = new long[h.NumEl];
        int i = 0;
        foreach (var off in h.StridedOffsets())
            result[i++] = h.DType switch
            {
                DType.Int64 => h.Storage.As<long>()[off],
                DType.Int32 => h.Storage.As<int>()[off],
                _ => (long)h.ReadAsDouble(off),
            };
        return result;
    }

    /// <summary>Raw bit patterns of a bfloat16 tensor in row-major order.</summary>
    public ushort[] ToBFloat16Bits()
    {
        if (DType != DType.BFloat16) throw new InvalidOperationException($"ToBFloat16Bits on a {DType.TorchName()} tensor");
        return Contiguous().Span<ushort>().ToArray();
    }

    /// <summary>The contiguous bytes of this tensor in row-major order (a copy).</summary>
    public byte[] ToBytes()
    {
        var c = Contiguous();
        int es = DType.Size();
        return c.Storage.Span((long)c.Offset * es, checked(c.NumEl * es)).ToArray();
    }

    /// <summary>True when shapes, dtypes and every bit are equal (NaNs with equal bits compare equal).</summary>
    public bool BitwiseEquals(Tensor other)
    {
        if (other.DType != DType || !Tensors.Shape.SequenceEqual(other.Shape, Shape)) return false;
        return ToBytes().AsSpan().SequenceEqual(other.ToBytes());
    }

    /// <summary>torch.cat: all shapes equal except along dim; dtypes must match.</summary>
    public static Tensor Cat(IReadOnlyList<Tensor> tensors, int dim = 0)
    {
        if (tensors.Count == 0) throw new ArgumentException("torch.cat(): expected a non-empty list of Tensors");
        var first = tensors[0];
        int d = Tensors.Shape.WrapDim(dim, first.Rank);
        int total = 0;
        for (int t = 0; t < tensors.Count; t++)
        {
            var x = tensors[t];
            if (x.DType != first.DType)
                throw new ArgumentException($"torch.cat(): expected all tensors to be {first.DType.TorchName()}, tensor {t} is {x.DType.TorchName()}");
            if (x.Rank != first.Rank)
                throw new ArgumentException(
                    $"Tensors must have same number of dimensions: got {first.Rank} and {x.Rank} (shapes {Tensors.Shape.Format(first.Shape)} and {Tensors.Shape.Format(x.Shape)})");
            for (int i = 0; i < x.Rank; i++)
                if (i != d && x.Shape[i] != first.Shape[i])
                    throw new ArgumentException(
                        $"Sizes of tensors must match except in dimension {d}. Expected size {first.Shape[i]} but got size {x.Shape[i]} for tensor number {t} in the list (shapes {Tensors.Shape.Format(first.Shape)} and {Tensors.Shape.Format(x.Shape)}).");
            total += x.Shape[d];
        }
        var shape = first.ShapeArray;
        shape[d] = total;
        var result = ZerosLike(first, first.DType, shape);
        int start = 0;
        foreach (var x in tensors)
        {
            result.Narrow(d, start, x.Shape[d]).CopyFrom(x);
            start += x.Shape[d];
        }
        return result;
    }

    /// <summary>torch.index_select: rows of dim picked by a 1D integer index.</summary>
    public Tensor IndexSelect(int dim, Tensor index)
    {
        int d = Tensors.Shape.WrapDim(dim, Rank);
        if (index.Rank > 1) throw new ArgumentException($"index_select(): Index is supposed to be a vector, got shape {Tensors.Shape.Format(index.Shape)}");
        if (index.DType is not (DType.Int64 or DType.Int32))
            throw new ArgumentException($"index_select(): Expected dtype int32/int64 for index, got {index.DType.TorchName()}");
        var ids = index.ToInt64Array();
        for (int i = 0; i < ids.Length; i++)
        {
            long id = ids[i];
            if (id < -_shape[d] || id >= _shape[d])
                throw new IndexOutOfRangeException($"index out of range in self: index {id} for dimension {d} of size {_shape[d]}");
            if (id < 0) ids[i] = id + _shape[d];
        }
        return Backend.IndexSelect(this, d, ids);
    }

    /// <summary>torch.gather: out[i][j][k] = self[i][index[i][j][k]][k] for dim 1, and so on.</summary>
    public Tensor Gather(int dim, Tensor index)
    {
        int d = Tensors.Shape.WrapDim(dim, Rank);
        if (index.Rank != Rank)
            throw new ArgumentException($"Index tensor must have the same number of dimensions as input tensor (index {Tensors.Shape.Format(index.Shape)}, input {Tensors.Shape.Format(Shape)})");
        for (int i = 0; i < Rank; i++)
            if (i != d && index.Shape[i] > _shape[i])
                throw new ArgumentException($"Size does not match at dimension {i} expected index {Tensors.Shape.Format(index.Shape)} to be smaller than self {Tensors.Shape.Format(Shape)} apart from dimension {d}");
        var ids = index.ToInt64Array();
        for (int i = 0; i < ids.Length; i++)
        {
            long id = ids[i];
            if (id < -_shape[d] || id >= _shape[d])
                throw new IndexOutOfRangeException($"index {id} is out of bounds for dimension {d} with size {_shape[d]}");
            if (id < 0) ids[i] = id + _shape[d];
        }
        return Backend.Gather(this, d, ids, index.ShapeArray);
    }

    /// <summary>A tensor viewing a whole storage as raw elements (shape and dtype given), for loaders; any size.</summary>
    public static Tensor FromStorage(Storage storage, DType dtype, int[] shape)
    {
        long need = Tensors.Shape.NumEl(shape) * dtype.Size();
        if (need != storage.ByteLength)
            throw new ArgumentException($"{storage.ByteLength} bytes cannot hold a {dtype.TorchName()} tensor of shape {Tensors.Shape.Format(shape)} ({need} bytes)");
        return new Tensor(storage, dtype, shape);
    }

    /// <summary>A tensor viewing the same bytes as raw elements (shape and dtype given), for loaders.</summary>
    public static Tensor FromBytes(Memory<byte> bytes, DType dtype, int[] shape, object? owner = null)
    {
        long need = Tensors.Shape.NumEl(shape) * dtype.Size();
        if (need != bytes.Length)
            throw new ArgumentException($"{bytes.Length} bytes cannot hold a {dtype.TorchName()} tensor of shape {Tensors.Shape.Format(shape)} ({need} bytes)");
        return new Tensor(new Storage(bytes, owner), dtype, shape);
    }

    internal static Span<T> Cast<T>(Span<byte> bytes) where T : struct => MemoryMarshal.Cast<byte, T>(bytes);
}
