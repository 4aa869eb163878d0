using Harness.Engine.Tensors;

namespace Harness.Engine.Distributed;

/// <summary>The collectives and point-to-point calls of <see cref="IProcessGroup"/>, named as torch.distributed names them.</summary>
public enum CollectiveOp
{
    AllReduce,
    AllGather,
    ReduceScatter,
    Broadcast,
    Barrier,
    Send,
    Recv,
}

/// <summary>
/// What one rank asked of a group: the op, the dtype and shape of its tensor, and its dim, root or peer. Ranks of a
/// group must post agreeing calls (<see cref="Agrees"/>); <see cref="ToString"/> is the text error messages quote,
/// e.g. "all_gather bfloat16 [2, 64] (dim 0)", "broadcast float32 [4] (root 1)", "send float32 [4] to rank 1".
/// </summary>
public sealed record CollectiveCall(CollectiveOp Op, DType? DType = null, int[]? Shape = null, int? Dim = null, int? Root = null, int? Peer = null)
{
    /// <summary>A call on a tensor; a dim in range is wrapped (-1 becomes rank-1) so that equal dims compare equal.</summary>
    public static CollectiveCall On(CollectiveOp op, Tensor t, int? dim = null, int? root = null, int? peer = null)
    {
        if (dim is int d && t.Rank > 0 && d >= -t.Rank && d < t.Rank && d < 0) dim = d + t.Rank;
        return new CollectiveCall(op, t.DType, t.ShapeArray, dim, root, peer);
    }

    /// <summary>torch's name: all_reduce, all_gather, reduce_scatter, broadcast, barrier, send, recv.</summary>
    public static string OpName(CollectiveOp op) => op switch
    {
        CollectiveOp.AllReduce => "all_reduce",
        CollectiveOp.AllGather => "all_gather",
        CollectiveOp.ReduceScatter => "reduce_scatter",
        CollectiveOp.Broadcast => "broadcast",
        CollectiveOp.Barrier => "barrier",
        CollectiveOp.Send => "send",
        CollectiveOp.Recv => "recv",
        _ => op.ToString(),
    };

    /// <summary>
    /// Same op, dtype, shape, dim and root: what every rank of a collective must agree on (torch requires equal shapes
    /// for all_reduce, all_gather_into_tensor, reduce_scatter_tensor and broadcast).
    /// </summary>
    public bool Agrees(CollectiveCall other) =>
        Op == other.Op && DType == other.DType && Dim == other.Dim && Root == other.Root &&
        (Shape is null ? other.Shape is null : other.Shape is not null && Shape.AsSpan().SequenceEqual(other.Shape));

    public override string ToString()
    {
        var s = OpName(Op);
        if (DType is DType dt) s += " " + dt.TorchName();
        if (Shape is not null) s += " " + Tensors.Shape.Format(Shape);
        if (Dim is int d) s += $" (dim {d})";
        if (Root is int r) s += $" (root {r})";
        if (Peer is int p) s += Op == CollectiveOp.Recv ? $" from rank {p}" : $" to rank {p}";
        return s;
    }
}
