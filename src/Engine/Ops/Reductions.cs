using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// Reductions over one dim (negative dims count from the end; keepDim keeps it as size 1) or over all elements.
/// Floats accumulate in float32 (never float64) and round once to the input dtype; mean = sum / n (torch's CPU mean,
/// bf16/fp16 via float32 then one rounding). Integer sum gives int64; max/min/argmax work on integers too.
/// Batch-invariant mode (<see cref="ComputeSettings.BatchInvariant"/>) sums in <see cref="K.Reductions.SumInvariant"/>'s fixed order.
/// </summary>
public static class Reductions
{
    internal enum Kind { Sum, Mean, Max, Min, ArgMax, ArgMin }

    public static Tensor Sum(Tensor x, int dim, bool keepDim = false) => Reduce(x, dim, keepDim, Kind.Sum).Values;
    public static Tensor Mean(Tensor x, int dim, bool keepDim = false) => Reduce(x, dim, keepDim, Kind.Mean).Values;
    /// <summary>torch.amax: the maximum values along dim (NaN propagates).</summary>
    public static Tensor Amax(Tensor x, int dim, bool keepDim = false) => Reduce(x, dim, keepDim, Kind.Max).Values;
    public static Tensor Amin(Tensor x, int dim, bool keepDim = false) => Reduce(x, dim, keepDim, Kind.Min).Values;

    /// <summary>torch.max(x, dim): values and int64 indices (first occurrence on ties).</summary>
    public static (Tensor Values, Tensor Indices) Max(Tensor x, int dim, bool keepDim = false)
    {
        var r = Reduce(x, dim, keepDim, Kind.Max, withIndices: true);
        return (r.Values, r.Indices!);
    }

    public static (Tensor Values, Tensor Indices) Min(Tensor x, int dim, bool keepDim = false)
    {
        var r = Reduce(x, dim, keepDim, Kind.Min, withIndices: true);
        return (r.Values, r.Indices!);
    }

    /// <summary>int64 index of the maximum along dim; first occurrence on ties, a NaN counts as the maximum.</summary>
    public static Tensor ArgMax(Tensor x, int dim, bool keepDim = false) => Reduce(x, dim, keepDim, Kind.ArgMax).Values;
    public static Tensor ArgMin(Tensor x, int dim, bool keepDim = false) => Reduce(x, dim, keepDim, Kind.ArgMin).Values;

    /// <summary>Over all elements: a 0-dim result.</summary>
    public static Tensor Sum(Tensor x) => Sum(Flat(x), 0);
    public static Tensor Mean(Tensor x) => Mean(Flat(x), 0);
    public static Tensor Amax(Tensor x) => Amax(Flat(x), 0);
    public static Tensor Amin(Tensor x) => Amin(Flat(x), 0);
    /// <summary>Index into the flattened tensor, as torch.argmax(x) without dim.</summary>
    public static Tensor ArgMax(Tensor x) => ArgMax(Flat(x), 0);
    public static Tensor ArgMin(Tensor x) => ArgMin(Flat(x), 0);

    private static Tensor Flat(Tensor x) => OpSupport.As1D(x).Reshape(-1);

    private static (Tensor Values, Tensor? Indices) Reduce(Tensor x, int dim, bool keepDim, Kind kind, bool withIndices = false)
    {
        int d = Shape.WrapDim(dim, x.Rank);
        var src = OpSupport.As1D(x);
        if (x.Rank == 0) d = 0;
        int n = src.Shape[d];
        string name = kind.ToString().ToLowerInvariant();
        if (n == 0 && kind is not (Kind.Sum or Kind.Mean))
            throw new ArgumentException(
                $"{name}(): Expected reduction dim {d} to have non-zero size (input shape {Shape.Format(x.Shape)})");

        // move the reduced dim last and make rows contiguous
        var perm = Enumerable.Range(0, src.Rank).Where(i => i != d).Append(d).ToArray();
        var moved = src.Permute(perm);
        var outShapeKeep = x.Rank == 0 ? [] : x.ShapeArray;
        if (x.Rank > 0) outShapeKeep[d] = 1;
        var outShape = keepDim || x.Rank == 0 ? outShapeKeep : x.ShapeArray.Where((_, i) => i != d).ToArray();
        return OpBackend.Of(x).RowReduce(moved, (int)kind, withIndices, outShape, x.DType, name);
    }

    internal static (Tensor, Tensor?) ReduceIntegers(Tensor l, int rows, int n, Kind kind, int[] outShape, bool withIndices, string name)
    {
        if (kind == Kind.Mean)
            throw new ArgumentException($"mean(): could not infer output dtype. Input dtype must be either a floating point or complex dtype. Got: {l.DType.TorchName()}");
        var values = Tensor.Zeros(DType.Int64, outShape);
        var indices = withIndices ? Tensor.Zeros(DType.Int64, outShape) : null;
        var src = l.Span<long>();
        var v = values.Span<long>();
        for (int r = 0; r < rows; r++)
        {
            var row = src.Slice(r * n, n);
            switch (kind)
            {
                case Kind.Sum: long s = 0; foreach (var e in row) s += e; v[r] = s; break;
                case Kind.Max:
                case Kind.Min:
                    int i = kind == Kind.Max ? K.Reductions.ArgMax(row) : K.Reductions.ArgMin(row);
                    v[r] = row[i];
                    if (indices is not null) indices.Span<long>()[r] = i;
                    break;
                case Kind.ArgMax: v[r] = K.Reductions.ArgMax(row); break;
                case Kind.ArgMin: v[r] = K.Reductions.ArgMin(row); break;
                default: throw new ArgumentException(name);
            }
        }
        return (values, indices);
    }
}

internal sealed partial class HostOps
{
    public (Tensor Values, Tensor? Indices) RowReduce(Tensor moved, int reduction, bool withIndices, int[] outShape, DType dtype, string name)
    {
        var kind = (Reductions.Kind)reduction;
        int n = moved.Shape[^1];
        int rows = (int)Shape.NumEl(outShape);
        bool invariant = ComputeSettings.BatchInvariant;
        int threads = ComputeSettings.Threads;

        if (!dtype.IsFloatingPoint())
            return Reductions.ReduceIntegers(moved.To(DType.Int64).Contiguous(), rows, n, kind, outShape, withIndices, name);

        var f = OpSupport.Float32Contiguous(moved);
        bool indexResult = kind is Reductions.Kind.ArgMax or Reductions.Kind.ArgMin;
        var values = Tensor.Zeros(indexResult ? DType.Int64 : DType.Float32, outShape);
        var indices = withIndices ? Tensor.Zeros(DType.Int64, outShape) : null;
        K.RowParallel.For(rows, n, threads, r =>
        {
            var row = f.Span<float>().Slice(r * n, n);
            switch (kind)
            {
                case Reductions.Kind.Sum: values.Span<float>()[r] = K.Reductions.Sum(row, invariant); break;
                case Reductions.Kind.Mean: values.Span<float>()[r] = K.Reductions.Sum(row, invariant) / n; break;
                case Reductions.Kind.Max:
                case Reductions.Kind.Min:
                    int i = kind == Reductions.Kind.Max ? K.Reductions.ArgMax(row) : K.Reductions.ArgMin(row);
                    values.Span<float>()[r] = row[i];
                    if (indices is not null) indices.Span<long>()[r] = i;
                    break;
                case Reductions.Kind.ArgMax: values.Span<long>()[r] = K.Reductions.ArgMax(row); break;
                case Reductions.Kind.ArgMin: values.Span<long>()[r] = K.Reductions.ArgMin(row); break;
            }
        });
        return (indexResult ? values : OpSupport.FromFloat32(values, dtype), indices);
    }
}
