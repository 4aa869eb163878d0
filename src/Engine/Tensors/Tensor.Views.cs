namespace Harness.Engine.Tensors;

/// <summary>Views: each returns a tensor over the same storage, never a copy.</summary>
public sealed partial class Tensor
{
    /// <summary>
    /// A view at a 64-bit element offset. Over a storage past 2^31 - 1 bytes the view gets a <see cref="Storage.Window"/>
    /// of the elements it reaches (its offset rebased into it), so its kernels index it with int offsets; over a smaller
    /// storage it shares the storage itself.
    /// </summary>
    private Tensor ViewOf(int[] shape, int[] strides, long offset)
    {
        if (!Storage.IsLarge) return new Tensor(Storage, DType, shape, strides, checked((int)offset));
        long lo = offset, hi = offset, n = Tensors.Shape.NumEl(shape);
        for (int i = 0; i < shape.Length && n > 0; i++)
        {
            long span = (long)(shape[i] - 1) * strides[i];
            if (span < 0) lo += span; else hi += span;
        }
        if (n == 0) hi = lo - 1;
        long es = DType.Size(), capacity = Storage.ByteLength / es;
        if (lo < 0 || hi >= capacity)
            throw new ArgumentException(
                $"view {Tensors.Shape.Format(shape)} with strides {Tensors.Shape.Format(strides)} and offset {offset} " +
                $"reaches elements [{lo}, {hi}] outside a storage of {capacity} {DType.TorchName()} elements");
        if (lo == 0 && hi == capacity - 1) return new Tensor(Storage, DType, shape, strides, 0);   // the whole storage
        return new Tensor(Storage.Window(lo * es, (hi - lo + 1) * es), DType, shape, strides, checked((int)(offset - lo)));
    }

    /// <summary>
    /// torch's view: the new shape (one dim may be -1) must be expressible with strides over the same memory.
    /// The error names both shapes and both stride sets.
    /// </summary>
    public Tensor View(params int[] shape)
    {
        var target = Tensors.Shape.Infer(shape, NumEl, _shape);
        var strides = ComputeViewStrides(target)
            ?? throw new InvalidOperationException(
                $"view size is not compatible with input tensor's size and stride (at least one dimension spans across two contiguous subspaces): " +
                $"cannot view shape {Tensors.Shape.Format(_shape)} with strides {Tensors.Shape.Format(_strides)} as {Tensors.Shape.Format(target)}. Use .reshape(...) instead.");
        return ViewOf(target, strides, Offset);
    }

    /// <summary>torch's reshape: a view when the strides allow one, otherwise a contiguous copy.</summary>
    public Tensor Reshape(params int[] shape)
    {
        var target = Tensors.Shape.Infer(shape, NumEl, _shape);
        var strides = ComputeViewStrides(target);
        return strides is null ? Contiguous().View(target) : ViewOf(target, strides, Offset);
    }

    /// <summary>Port of ATen's computeStride: null when no view exists.</summary>
    private int[]? ComputeViewStrides(int[] newShape)
    {
        var newStrides = new int[newShape.Length];
        if (NumEl == 0 || Rank == 0)
            return Tensors.Shape.ContiguousStrides(newShape);
        int viewD = newShape.Length - 1;
        long chunkBaseStride = _strides.Length > 0 ? _strides[^1] : 1;
        long tensorNumel = 1, viewNumel = 1;
        for (int tensorD = _shape.Length - 1; tensorD >= 0; tensorD--)
        {
            tensorNumel *= _shape[tensorD];
            if (tensorD == 0 || (_shape[tensorD - 1] != 1 && _strides[tensorD - 1] != tensorNumel * chunkBaseStride))
            {
                while (viewD >= 0 && (viewNumel < tensorNumel || newShape[viewD] == 1))
                {
                    // a size-1 dim's stride is never used to step: clamp it rather than overflow past a 2^31-element tensor
                    long stride = viewNumel * chunkBaseStride;
                    newStrides[viewD] = newShape[viewD] == 1 ? (int)Math.Min(stride, int.MaxValue) : checked((int)stride);
                    viewNumel *= newShape[viewD];
                    viewD--;
                }
                if (viewNumel != tensorNumel) return null;
                if (tensorD > 0)
                {
                    chunkBaseStride = _strides[tensorD - 1];
                    tensorNumel = 1;
                    viewNumel = 1;
                }
            }
        }
        if (viewD != -1) return null;
        return newStrides;
    }

    /// <summary>Swaps two dimensions.</summary>
    public Tensor Transpose(int dim0, int dim1)
    {
        int a = Tensors.Shape.WrapDim(dim0, Rank), b = Tensors.Shape.WrapDim(dim1, Rank);
        var shape = ShapeArray;
        var strides = StridesArray;
        (shape[a], shape[b]) = (shape[b], shape[a]);
        (strides[a], strides[b]) = (strides[b], strides[a]);
        return ViewOf(shape, strides, Offset);
    }

    /// <summary>The transpose of a matrix (torch's .T / .t() for rank 2; a no-op for rank 0 and 1).</summary>
    public Tensor T() => Rank < 2 ? this : Rank == 2 ? Transpose(0, 1)
        : throw new InvalidOperationException($"t() expects a tensor with <= 2 dimensions, but self is {Rank}D (shape {Tensors.Shape.Format(_shape)})");

    /// <summary>Reorders dimensions: result dim i is input dim dims[i].</summary>
    public Tensor Permute(params int[] dims)
    {
        if (dims.Length != Rank)
            throw new ArgumentException(
                $"permute(sparse_coo): number of dimensions in the tensor input does not match the length of the desired ordering of dimensions i.e. input.dim() = {Rank} is not equal to len(dims) = {dims.Length}");
        var seen = new bool[Rank];
        var shape = new int[Rank];
        var strides = new int[Rank];
        for (int i = 0; i < Rank; i++)
        {
            int d = Tensors.Shape.WrapDim(dims[i], Rank);
            if (seen[d]) throw new ArgumentException($"permute(): duplicate dims are not allowed (dims {Tensors.Shape.Format(dims)})");
            seen[d] = true;
            shape[i] = _shape[d];
            strides[i] = _strides[d];
        }
        return ViewOf(shape, strides, Offset);
    }

    /// <summary>Elements [start, start+length) of a dimension.</summary>
    public Tensor Narrow(int dim, int start, int length)
    {
        int d = Tensors.Shape.WrapDim(dim, Rank);
        if (start < 0) start += _shape[d];
        if (start < 0 || length < 0 || start + length > _shape[d])
            throw new ArgumentOutOfRangeException(nameof(start),
                $"start ({start}) + length ({length}) exceeds dimension size ({_shape[d]}) of dim {d} in shape {Tensors.Shape.Format(_shape)}");
        var shape = ShapeArray;
        shape[d] = length;
        return ViewOf(shape, StridesArray, Offset + (long)start * _strides[d]);
    }

    /// <summary>Python-style slice x[start:end:step] on one dimension (ends clamp, negatives count from the end).</summary>
    public Tensor Slice(int dim, int? start = null, int? end = null, int step = 1)
    {
        if (step <= 0) throw new ArgumentException("slice step must be positive");
        int d = Tensors.Shape.WrapDim(dim, Rank);
        int size = _shape[d];
        int s = start ?? 0, e = end ?? size;
        if (s < 0) s += size;
        if (e < 0) e += size;
        s = Math.Clamp(s, 0, size);
        e = Math.Clamp(e, s, size);
        var shape = ShapeArray;
        var strides = StridesArray;
        shape[d] = (e - s + step - 1) / step;
        strides[d] = _strides[d] * step;
        return ViewOf(shape, strides, Offset + (long)s * _strides[d]);
    }

    /// <summary>x[..., i, ...]: removes the dimension.</summary>
    public Tensor Select(int dim, int index)
    {
        int d = Tensors.Shape.WrapDim(dim, Rank);
        int size = _shape[d];
        if (index < -size || index >= size)
            throw new IndexOutOfRangeException($"index {index} is out of bounds for dimension {d} with size {size}");
        if (index < 0) index += size;
        var shape = _shape.Where((_, i) => i != d).ToArray();
        var strides = _strides.Where((_, i) => i != d).ToArray();
        return ViewOf(shape, strides, Offset + (long)index * _strides[d]);
    }

    public Tensor Unsqueeze(int dim)
    {
        int d = Tensors.Shape.WrapDim(dim, Rank + 1);
        var shape = _shape.ToList();
        var strides = _strides.ToList();
        int stride = d < Rank ? (int)Math.Min((long)_shape[d] * _strides[d], int.MaxValue) : 1;   // never stepped (size 1)
        shape.Insert(d, 1);
        strides.Insert(d, stride);
        return ViewOf(shape.ToArray(), strides.ToArray(), Offset);
    }

    /// <summary>Removes every size-1 dimension, or only <paramref name="dim"/> when given (a no-op if it is not 1).</summary>
    public Tensor Squeeze(int? dim = null)
    {
        if (dim is int dd)
        {
            int d = Tensors.Shape.WrapDim(dd, Rank);
            if (_shape[d] != 1) return this;
            return ViewOf(_shape.Where((_, i) => i != d).ToArray(), _strides.Where((_, i) => i != d).ToArray(), Offset);
        }
        var keep = Enumerable.Range(0, Rank).Where(i => _shape[i] != 1).ToArray();
        return ViewOf(keep.Select(i => _shape[i]).ToArray(), keep.Select(i => _strides[i]).ToArray(), Offset);
    }

    /// <summary>
    /// torch's expand: size-1 dims grow with stride 0, new leading dims are added, -1 keeps a size.
    /// The error is torch's, with both shapes.
    /// </summary>
    public Tensor Expand(params int[] shape)
    {
        if (shape.Length < Rank)
            throw new ArgumentException(
                $"expand: the number of sizes provided ({shape.Length}) must be greater or equal to the number of dimensions in the tensor ({Rank})");
        var newShape = new int[shape.Length];
        var newStrides = new int[shape.Length];
        int lead = shape.Length - Rank;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            int src = i - lead;
            int target = shape[i];
            if (src < 0)
            {
                if (target < 0) throw new ArgumentException($"The expanded size of the tensor (-1) isn't allowed in a leading, non-existing dimension {i}");
                newShape[i] = target;
                newStrides[i] = 0;
                continue;
            }
            int size = _shape[src];
            if (target == -1) target = size;
            if (size == target)
            {
                newShape[i] = size;
                newStrides[i] = _strides[src];
            }
            else if (size == 1)
            {
                newShape[i] = target;
                newStrides[i] = 0;
            }
            else
            {
                throw new ArgumentException(
                    $"The expanded size of the tensor ({target}) must match the existing size ({size}) at non-singleton dimension {i}.  " +
                    $"Target sizes: {Tensors.Shape.Format(shape)}.  Tensor sizes: {Tensors.Shape.Format(_shape)}");
            }
        }
        return ViewOf(newShape, newStrides, Offset);
    }

    public Tensor BroadcastTo(params int[] shape) => Expand(shape);

    /// <summary>torch.chunk: ceil(size/chunks) per chunk, the last one shorter; may return fewer than asked.</summary>
    public Tensor[] Chunk(int chunks, int dim = 0)
    {
        if (chunks <= 0) throw new ArgumentException($"chunk expects `chunks` to be greater than 0, got: {chunks}");
        int d = Tensors.Shape.WrapDim(dim, Rank);
        int size = _shape[d];
        int each = (size + chunks - 1) / chunks;
        return Split(Math.Max(each, 1), d);
    }

    /// <summary>torch.split with one size: pieces of splitSize along dim, the last one shorter.</summary>
    public Tensor[] Split(int splitSize, int dim = 0)
    {
        if (splitSize <= 0) throw new ArgumentException($"split expects split_size be non-negative, but got split_size={splitSize}");
        int d = Tensors.Shape.WrapDim(dim, Rank);
        int size = _shape[d];
        var parts = new List<Tensor>();
        for (int s = 0; s < size; s += splitSize) parts.Add(Narrow(d, s, Math.Min(splitSize, size - s)));
        if (parts.Count == 0) parts.Add(Narrow(d, 0, 0));
        return parts.ToArray();
    }

    /// <summary>torch.split with explicit sizes, which must add up to the dimension.</summary>
    public Tensor[] Split(int[] sizes, int dim = 0)
    {
        int d = Tensors.Shape.WrapDim(dim, Rank);
        if (sizes.Sum() != _shape[d])
            throw new ArgumentException(
                $"split_with_sizes expects split_sizes to sum exactly to {_shape[d]} (input tensor's size at dimension {d}), but got split_sizes={Tensors.Shape.Format(sizes)}");
        var parts = new Tensor[sizes.Length];
        int start = 0;
        for (int i = 0; i < sizes.Length; i++)
        {
            parts[i] = Narrow(d, start, sizes[i]);
            start += sizes[i];
        }
        return parts;
    }

    /// <summary>Flattens dims [startDim, endDim] into one.</summary>
    public Tensor Flatten(int startDim = 0, int endDim = -1)
    {
        if (Rank == 0) return Reshape(1);
        int s = Tensors.Shape.WrapDim(startDim, Rank), e = Tensors.Shape.WrapDim(endDim, Rank);
        var shape = new List<int>();
        for (int i = 0; i < s; i++) shape.Add(_shape[i]);
        int prod = 1;
        for (int i = s; i <= e; i++) prod *= _shape[i];
        shape.Add(prod);
        for (int i = e + 1; i < Rank; i++) shape.Add(_shape[i]);
        return Reshape(shape.ToArray());
    }
}
