using Harness.Engine.Tensors;

namespace Harness.Engine.Distributed;

/// <summary>
/// One rank's handle on a group of a <see cref="ThreadWorld"/> (ranks are threads of one process). Every collective
/// has torch.distributed's semantics as <see cref="IProcessGroup"/> states them; the rendezvous, the checks and the
/// timeouts are the group's (<see cref="Rendezvous"/>), the arithmetic is <see cref="CollectiveMath"/>'s. Get one from
/// <see cref="ThreadWorld.Group(int, int[], string)"/>.
/// </summary>
public sealed class ThreadProcessGroup : IProcessGroup
{
    private readonly Rendezvous _rendezvous;

    internal ThreadProcessGroup(Rendezvous rendezvous, int rank)
    {
        _rendezvous = rendezvous;
        Rank = rank;
    }

    public int Rank { get; }
    public int WorldSize => _rendezvous.Size;
    public string Name => _rendezvous.Name;

    /// <summary>The world rank of each group rank (group rank i is world rank WorldRanks[i]).</summary>
    public IReadOnlyList<int> WorldRanks => _rendezvous.WorldRanks;

    public ThreadWorld World => _rendezvous.World;

    /// <summary>The group's shared state (a device group runs its own arithmetic over it, <c>CudaProcessGroup</c>).</summary>
    internal Rendezvous Rendezvous => _rendezvous;

    public Tensor AllReduce(Tensor t) => Run(CollectiveCall.On(CollectiveOp.AllReduce, t), t);

    public Tensor AllGather(Tensor t, int dim = 0) => Run(CollectiveCall.On(CollectiveOp.AllGather, t, dim: dim), t);

    public Tensor ReduceScatter(Tensor t, int dim = 0) => Run(CollectiveCall.On(CollectiveOp.ReduceScatter, t, dim: dim), t);

    public Tensor Broadcast(Tensor t, int root) => Run(CollectiveCall.On(CollectiveOp.Broadcast, t, root: root), t);

    public void Send(Tensor t, int dst) => _rendezvous.Send(Rank, dst, t);

    public Tensor Recv(int src) => _rendezvous.Recv(Rank, src);

    public void Barrier() => _rendezvous.Collective(Rank, new CollectiveCall(CollectiveOp.Barrier), null);

    private Tensor Run(CollectiveCall call, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(t);
        var shared = _rendezvous.Collective(Rank, call, t)
            ?? throw new InvalidOperationException($"{Name}: {call} produced no result");
        return CollectiveMath.CopyOut(call, shared, Rank, WorldSize);
    }

    public override string ToString() => $"{Name} rank {Rank}/{WorldSize}";
}
