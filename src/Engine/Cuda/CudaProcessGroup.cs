using Harness.Engine.Distributed;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// A process group for ranks that are threads sharing one GPU, each with its own stream: the collectives of the wrapped
/// thread group (same interface, same fixed-order float32 sums, same mismatch diagnosis naming each rank's call), with
/// device tensors staged through host memory: a rank's input is copied to the host after its stream drains, the thread
/// group combines the host copies, and the result comes back to the device on the calling rank's stream. Host inputs
/// give host results, as before.
/// <para>Not yet done: keeping the reduction in device memory (a kernel summing the ranks' buffers in rank order);
/// staging costs two copies per collective, which the tiny models of the catalog do not notice.</para>
/// </summary>
public sealed class CudaProcessGroup(IProcessGroup inner, CudaDevice device) : IProcessGroup
{
    public int Rank => inner.Rank;
    public int WorldSize => inner.WorldSize;
    public string Name => inner.Name;

    /// <summary>Wraps both groups of a rank's context.</summary>
    public static ParallelContext Wrap(ParallelContext ctx, CudaDevice device) =>
        ctx with { Tp = new CudaProcessGroup(ctx.Tp, device), Pp = new CudaProcessGroup(ctx.Pp, device) };

    private Tensor Back(Tensor host, bool wasDevice) => wasDevice ? host.ToDevice(device) : host;

    public Tensor AllReduce(Tensor t) => Back(inner.AllReduce(t.ToHost()), t.IsCuda);
    public Tensor AllGather(Tensor t, int dim = 0) => Back(inner.AllGather(t.ToHost(), dim), t.IsCuda);
    public Tensor ReduceScatter(Tensor t, int dim = 0) => Back(inner.ReduceScatter(t.ToHost(), dim), t.IsCuda);
    public Tensor Broadcast(Tensor t, int root) => Back(inner.Broadcast(t.ToHost(), root), t.IsCuda);
    public void Send(Tensor t, int dst) => inner.Send(t.ToHost(), dst);
    /// <summary>Received tensors land on the device (a pipeline stage on a GPU computes there).</summary>
    public Tensor Recv(int src) => inner.Recv(src).ToDevice(device);
    public void Barrier() => inner.Barrier();
}
