using System.Runtime.CompilerServices;

namespace Harness.Engine.Tensors;

/// <summary>
/// A strided view over a <see cref="Storage"/>: shape, strides and offset in elements, and a dtype.
/// Views (reshape, transpose, narrow, expand, ...) share the storage; <see cref="Contiguous"/> and
/// <see cref="To"/> copy. Shapes, strides and the offset are int; a storage may be of any size (a memory-mapped
/// checkpoint tensor past 2 GiB): a view over a storage past 2^31 - 1 bytes computes its offset in 64 bits and gets a
/// <see cref="Storage.Window"/> of just the elements it reaches, so a looked-up row or a rank's shard of a 4 GB table
/// is an ordinary small tensor to every kernel, and nothing is copied.
/// </summary>
public sealed partial class Tensor
{
    private readonly int[] _shape;
    private readonly int[] _strides;

    public Storage Storage { get; }
    public DType DType { get; }
    /// <summary>Offset of element [0, 0, ...] in the storage, in elements.</summary>
    public int Offset { get; }

    public Tensor(Storage storage, DType dtype, int[] shape, int[]? strides = null, int offset = 0)
    {
        ArgumentNullException.ThrowIfNull(storage);
        ArgumentNullException.ThrowIfNull(shape);
        foreach (var s in shape)
            if (s < 0) throw new ArgumentException($"negative dimension in shape {Tensors.Shape.Format(shape)}");
        strides ??= Tensors.Shape.ContiguousStrides(shape);
        if (strides.Length != shape.Length)
            throw new ArgumentException($"strides {Tensors.Shape.Format(strides)} do not match shape {Tensors.Shape.Format(shape)}");
        Storage = storage;
        DType = dtype;
        _shape = shape;
        _strides = strides;
        Offset = offset;
        CheckBounds();
    }

    private void CheckBounds()
    {
        if (ElementCount == 0) return;
        long lo = Offset, hi = Offset;
        for (int i = 0; i < _shape.Length; i++)
        {
            long span = (long)(_shape[i] - 1) * _strides[i];
            if (span < 0) lo += span; else hi += span;
        }
        long capacity = Storage.ByteLength / DType.Size();
        if (lo < 0 || hi >= capacity)
            throw new ArgumentException(
                $"view {Tensors.Shape.Format(_shape)} with strides {Tensors.Shape.Format(_strides)} and offset {Offset} " +
                $"reaches elements [{lo}, {hi}] outside a storage of {capacity} {DType.TorchName()} elements");
    }

    public ReadOnlySpan<int> Shape => _shape;
    public ReadOnlySpan<int> Strides => _strides;
    public int[] ShapeArray => (int[])_shape.Clone();
    public int[] StridesArray => (int[])_strides.Clone();
    public int Rank => _shape.Length;
    /// <summary>The element count; a tensor of more than 2^31 - 1 elements (a whole mapped table) has <see cref="ElementCount"/>.</summary>
    public int NumEl
    {
        get
        {
            long n = Tensors.Shape.NumEl(_shape);
            return n <= int.MaxValue ? (int)n : throw new InvalidOperationException(
                $"tensor of shape {Tensors.Shape.Format(_shape)} has {n} elements, more than one kernel pass indexes (2^31 - 1): " +
                "take a view of it first (Narrow, Select, a vocab shard, an embedding lookup)");
        }
    }

    /// <summary>The element count of a tensor of any size.</summary>
    public long ElementCount => Tensors.Shape.NumEl(_shape);

    /// <summary>Size of a dimension; negative dims count from the end.</summary>
    public int Size(int dim) => _shape[Tensors.Shape.WrapDim(dim, Rank)];

    public int Stride(int dim) => _strides[Tensors.Shape.WrapDim(dim, Rank)];

    /// <summary>Row-major contiguous (size-1 dimensions may have any stride, and a tensor without elements is contiguous,
    /// as in torch: Shape.ContiguousStrides gives [2, 0] the strides [1, 1], which the loop below would refuse).</summary>
    public bool IsContiguous
    {
        get
        {
            if (Array.IndexOf(_shape, 0) >= 0) return true;
            long expected = 1;
            for (int i = _shape.Length - 1; i >= 0; i--)
            {
                if (_shape[i] == 1) continue;
                if (_strides[i] != expected) return false;
                expected *= _shape[i];
            }
            return true;
        }
    }

    /// <summary>The element span of a contiguous tensor, starting at its offset.</summary>
    public Span<T> Span<T>() where T : unmanaged
    {
        CheckElementType<T>();
        if (!IsContiguous) throw new InvalidOperationException(
            $"Span<{typeof(T).Name}>() needs a contiguous tensor; shape {Tensors.Shape.Format(_shape)} has strides {Tensors.Shape.Format(_strides)}: call Contiguous() first");
        return Storage.As<T>(Offset, NumEl);
    }

    /// <summary>The whole storage as elements of T, for strided kernels that index with offset and strides.</summary>
    public Span<T> StorageSpan<T>() where T : unmanaged
    {
        CheckElementType<T>();
        return Storage.As<T>();
    }

    private void CheckElementType<T>() where T : unmanaged
    {
        bool ok = DType switch
        {
            DType.Float32 => typeof(T) == typeof(float),
            DType.BFloat16 => typeof(T) == typeof(ushort),
            DType.Float16 => typeof(T) == typeof(Half) || typeof(T) == typeof(ushort),
            DType.Int64 => typeof(T) == typeof(long),
            DType.Int32 => typeof(T) == typeof(int),
            DType.Bool => typeof(T) == typeof(bool) || typeof(T) == typeof(byte),
            DType.Float64 => typeof(T) == typeof(double),
            _ => false,
        };
        if (!ok) throw new InvalidOperationException($"a {DType.TorchName()} tensor cannot be read as {typeof(T).Name}");
    }

    /// <summary>Storage offset (in elements) of a multi-index (a storage up to 2^31 - 1 elements; <see cref="LongOffsetOf"/> for any).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int OffsetOf(ReadOnlySpan<int> index) => checked((int)LongOffsetOf(index));

    /// <summary>Storage offset (in elements) of a multi-index, in a storage of any size.</summary>
    public long LongOffsetOf(ReadOnlySpan<int> index)
    {
        if (index.Length != Rank)
            throw new ArgumentException($"index of rank {index.Length} for a tensor of shape {Tensors.Shape.Format(_shape)}");
        long off = Offset;
        for (int i = 0; i < index.Length; i++)
        {
            int ix = index[i];
            if ((uint)ix >= (uint)_shape[i])
                throw new IndexOutOfRangeException($"index {ix} is out of bounds for dimension {i} with size {_shape[i]}");
            off += (long)ix * _strides[i];
        }
        return off;
    }

    /// <summary>One element as double, whatever the dtype (in a tensor of any size).</summary>
    public double At(params int[] index) => ReadAsDouble(LongOffsetOf(index));

    internal double ReadAsDouble(long storageOffset) => DType switch
    {
        DType.Float32 => Storage.As<float>(storageOffset, 1)[0],
        DType.BFloat16 => BFloat16.ToFloat(Storage.As<ushort>(storageOffset, 1)[0]),
        DType.Float16 => (double)Storage.As<Half>(storageOffset, 1)[0],
        DType.Int64 => Storage.As<long>(storageOffset, 1)[0],
        DType.Int32 => Storage.As<int>(storageOffset, 1)[0],
        DType.Bool => Storage.Span(storageOffset, 1)[0] != 0 ? 1 : 0,
        DType.Float64 => Storage.As<double>(storageOffset, 1)[0],
        _ => throw new InvalidOperationException(DType.ToString()),
    };

    /// <summary>The item of a one-element tensor.</summary>
    public double Item()
    {
        if (NumEl != 1)
            throw new InvalidOperationException($"a Tensor with {NumEl} elements cannot be converted to Scalar");
        return ReadAsDouble(Offset);
    }

    public override string ToString() =>
        $"Tensor({DType.TorchName()}, shape={Tensors.Shape.Format(_shape)}, strides={Tensors.Shape.Format(_strides)}, offset={Offset})";
}
