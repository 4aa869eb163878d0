using System.Numerics.Tensors;
using Harness.Engine.Tensors;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Distributed;

/// <summary>
/// The arithmetic of the collectives, on the inputs of every rank at once (what the last rank to arrive computes).
/// Sums run in a fixed order, rank 0 + rank 1 + ... + rank n-1, element by element: float32 adds in float32;
/// bfloat16/float16 are widened to float32, summed there and rounded once; int64/int32 add exactly (wrapping, as
/// torch); bool sums are logical or (torch's NCCL backend maps SUM on bool to MAX). Results are fresh tensors that
/// share no storage with the inputs.
/// </summary>
public static class CollectiveMath
{
    /// <summary>Elementwise sum over the list in list order; shapes and dtypes must be equal.</summary>
    public static Tensor Sum(IReadOnlyList<Tensor> inputs)
    {
        if (inputs.Count == 0) throw new ArgumentException("sum of no tensors");
        var first = inputs[0];
        var shape = first.ShapeArray;
        foreach (var x in inputs)
            if (x.DType != first.DType || !x.Shape.SequenceEqual(first.Shape))
                throw new ArgumentException($"sum of {first.DType.TorchName()} {Shape.Format(first.Shape)} and {x.DType.TorchName()} {Shape.Format(x.Shape)}");
        switch (first.DType)
        {
            case DType.Float32:
            case DType.BFloat16:
            case DType.Float16:
            {
                var acc = Tensor.Zeros(DType.Float32, shape);
                acc.CopyFrom(first);
                var a = acc.Span<float>();
                for (int r = 1; r < inputs.Count; r++)
                    TensorPrimitives.Add(a, inputs[r].To(DType.Float32).Contiguous().Span<float>(), a);
                return first.DType == DType.Float32 ? acc : acc.To(first.DType);
            }
            case DType.Int64:
            {
                var acc = first.Clone();
                var a = acc.Span<long>();
                for (int r = 1; r < inputs.Count; r++)
                {
                    var x = inputs[r].Contiguous().Span<long>();
                    for (int i = 0; i < a.Length; i++) a[i] = unchecked(a[i] + x[i]);
                }
                return acc;
            }
            case DType.Int32:
            {
                var acc = first.Clone();
                var a = acc.Span<int>();
                for (int r = 1; r < inputs.Count; r++)
                {
                    var x = inputs[r].Contiguous().Span<int>();
                    for (int i = 0; i < a.Length; i++) a[i] = unchecked(a[i] + x[i]);
                }
                return acc;
            }
            case DType.Bool:
            {
                var acc = first.Clone();
                var a = acc.Span<byte>();
                for (int r = 1; r < inputs.Count; r++)
                {
                    var x = inputs[r].Contiguous().Span<byte>();
                    for (int i = 0; i < a.Length; i++) a[i] = (byte)(a[i] | x[i]);
                }
                return acc;
            }
            default:
                throw new ArgumentException($"sum of {first.DType.TorchName()} tensors is not supported");
        }
    }

    /// <summary>
    /// The shared result of one collective, given the agreeing calls and inputs of every rank: the sum (all_reduce,
    /// reduce_scatter: each rank then keeps its chunk), the concatenation (all_gather), root's tensor (broadcast), or
    /// null (barrier). Invalid calls throw <see cref="CollectiveException"/> with <see cref="CollectiveFailure.InvalidArgument"/>.
    /// </summary>
    public static Tensor? Compute(string group, CollectiveCall call, IReadOnlyList<Tensor?> inputs)
    {
        int n = inputs.Count;
        Tensor[] xs() => inputs.Select(t => t ?? throw new InvalidOperationException($"{group}: {call} without a tensor")).ToArray();
        switch (call.Op)
        {
            case CollectiveOp.Barrier:
                return null;
            case CollectiveOp.AllReduce:
                return Sum(xs());
            case CollectiveOp.AllGather:
            {
                var t = xs();
                int dim = CheckDim(group, call, t[0]);
                return Tensor.Cat(t, dim);
            }
            case CollectiveOp.ReduceScatter:
            {
                var t = xs();
                int dim = CheckDim(group, call, t[0]);
                if (t[0].Shape[dim] % n != 0)
                    throw new CollectiveException(CollectiveFailure.InvalidArgument,
                        $"{group}: {call}: size {t[0].Shape[dim]} of dim {dim} does not divide into {n} equal chunks (world size {n})");
                return Sum(t);
            }
            case CollectiveOp.Broadcast:
            {
                int root = call.Root ?? 0;
                if (root < 0 || root >= n)
                    throw new CollectiveException(CollectiveFailure.InvalidArgument,
                        $"{group}: {call}: root {root} is not a rank of a group of {n}");
                return xs()[root].Clone();
            }
            default:
                throw new InvalidOperationException($"{group}: {call} is not a collective");
        }
    }

    /// <summary>
    /// The checks <see cref="Compute"/> makes before any arithmetic (dim in range, chunks divide, root in the group), with
    /// the same errors, for a group that computes elsewhere (on a GPU): only shapes are read.
    /// </summary>
    public static void Validate(string group, CollectiveCall call, IReadOnlyList<Tensor?> inputs)
    {
        int n = inputs.Count;
        var first = inputs[0];
        switch (call.Op)
        {
            case CollectiveOp.AllGather:
                CheckDim(group, call, first!);
                break;
            case CollectiveOp.ReduceScatter:
            {
                int dim = CheckDim(group, call, first!);
                if (first!.Shape[dim] % n != 0)
                    throw new CollectiveException(CollectiveFailure.InvalidArgument,
                        $"{group}: {call}: size {first.Shape[dim]} of dim {dim} does not divide into {n} equal chunks (world size {n})");
                break;
            }
            case CollectiveOp.Broadcast:
            {
                int root = call.Root ?? 0;
                if (root < 0 || root >= n)
                    throw new CollectiveException(CollectiveFailure.InvalidArgument,
                        $"{group}: {call}: root {root} is not a rank of a group of {n}");
                break;
            }
        }
    }

    /// <summary>The part of a shared result that rank <paramref name="rank"/> of <paramref name="worldSize"/> copies out.</summary>
    public static Tensor CopyOut(CollectiveCall call, Tensor shared, int rank, int worldSize)
    {
        if (call.Op != CollectiveOp.ReduceScatter) return shared.Clone();
        int dim = call.Dim ?? 0;
        int chunk = shared.Shape[dim] / worldSize;
        return shared.Narrow(dim, rank * chunk, chunk).Clone();
    }

    private static int CheckDim(string group, CollectiveCall call, Tensor t)
    {
        int dim = call.Dim ?? 0;
        if (t.Rank == 0)
            throw new CollectiveException(CollectiveFailure.InvalidArgument,
                $"{group}: {call}: a 0-dim tensor has no dim to {(call.Op == CollectiveOp.AllGather ? "gather" : "scatter")} along");
        if (dim < 0 || dim >= t.Rank)
            throw new CollectiveException(CollectiveFailure.InvalidArgument,
                $"{group}: {call}: dim {dim} is out of range for a tensor of {t.Rank} dimensions");
        return dim;
    }
}
