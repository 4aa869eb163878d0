using Harness.Engine.Tensors;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>Embedding lookup: rows of a [vocab, hidden] table picked by int32/int64 ids of any shape.</summary>
public static class Embedding
{
    /// <summary>Returns ids.shape + [hidden] in the table's dtype (rows copied bit for bit).</summary>
    public static Tensor Lookup(Tensor weight, Tensor ids)
    {
        CheckArguments(weight, ids);
        return OpBackend.Of(weight).Embedding(weight, ids);
    }

    /// <summary>A 2-D table and int64/int32 ids, or an error naming the shape or dtype.</summary>
    internal static void CheckArguments(Tensor weight, Tensor ids)
    {
        if (weight.Rank != 2)
            throw new ArgumentException($"embedding: weight must be 2D [vocab, hidden], got shape {Shape.Format(weight.Shape)}");
        if (ids.DType is not (DType.Int64 or DType.Int32))
            throw new ArgumentException($"embedding: expected ids of dtype int64 or int32, got {ids.DType.TorchName()}");
    }
}

/// <summary>The host's lookup.</summary>
internal sealed partial class HostOps
{
    public Tensor Embedding(Tensor weight, Tensor ids)
    {
        int vocab = weight.Size(0), hidden = weight.Size(1);
        // A strided table is copied whole; a contiguous one (a mapped checkpoint table of any size) is read in place,
        // only the looked-up rows, at 64-bit byte offsets.
        var table = weight.Stride(1) == 1 ? weight : weight.Contiguous();
        var idv = ids.ToInt64Array();
        for (int i = 0; i < idv.Length; i++)
            if (idv[i] < 0 || idv[i] >= vocab)
                throw new IndexOutOfRangeException(
                    $"embedding: id {idv[i]} (at flat position {i} of ids shape {Shape.Format(ids.Shape)}) is out of range for a vocab size of {vocab} (valid ids are 0..{vocab - 1})");
        var shape = ids.ShapeArray.Append(hidden).ToArray();
        var y = Tensor.Zeros(weight.DType, shape);
        int es = weight.DType.Size(), rowBytes = hidden * es;
        long rowStride = (long)table.Stride(0) * es;
        var dst = y.Storage.Bytes;
        for (int i = 0; i < idv.Length; i++)
            table.Storage.Span((long)table.Offset * es + idv[i] * rowStride, rowBytes).CopyTo(dst.Slice(i * rowBytes, rowBytes));
        return y;
    }
}
