using Harness.Engine.Tensors;

namespace Harness.Engine.Distributed;

/// <summary>
/// A group of ranks that run collectives together, with torch.distributed's semantics. Every rank of the group must
/// call the same collective in the same order with the same dtype and compatible shapes; an implementation checks
/// that and turns a mismatch or a missing rank into an error naming each rank's call, within a timeout, never a hang.
/// Results are new tensors (inputs are not modified). Reductions are sums in a fixed order (rank 0, 1, ..., n-1,
/// accumulated in float32 for bf16/fp16 and rounded once), so results are the same run to run and on every rank.
/// </summary>
public interface IProcessGroup
{
    /// <summary>This rank's index in the group, 0..WorldSize-1.</summary>
    int Rank { get; }

    int WorldSize { get; }

    /// <summary>A name for errors, e.g. "tp[0,1]" or "pp[0,2]".</summary>
    string Name { get; }

    /// <summary>Elementwise sum over ranks; every rank gets the sum. Shapes must be equal.</summary>
    Tensor AllReduce(Tensor t);

    /// <summary>Concatenation of every rank's tensor along dim, in rank order. Shapes must be equal.</summary>
    Tensor AllGather(Tensor t, int dim = 0);

    /// <summary>Sum over ranks, then rank r keeps chunk r of WorldSize equal chunks along dim (size must divide).</summary>
    Tensor ReduceScatter(Tensor t, int dim = 0);

    /// <summary>Every rank gets root's tensor (the others' inputs give only dtype and shape, which must match).</summary>
    Tensor Broadcast(Tensor t, int root);

    /// <summary>Point-to-point: blocks until dst has posted the matching Recv (or the timeout).</summary>
    void Send(Tensor t, int dst);

    /// <summary>Receives the next tensor src sent to this rank.</summary>
    Tensor Recv(int src);

    void Barrier();
}
