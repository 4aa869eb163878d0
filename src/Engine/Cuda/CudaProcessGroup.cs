using System.Runtime.CompilerServices;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Distributed;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// A process group for ranks that are threads sharing one GPU, each with its own stream, with the collectives done in
/// device memory. The wrapped thread group's rendezvous still matches the ranks' calls (same interface, same mismatch
/// and timeout diagnosis naming each rank's call, same argument checks), but computes nothing: each rank's stream does
/// the arithmetic itself, so no value goes through the host.
/// <para>Collective k on rank r (p = k mod 2): (1) r's stream waits until every rank has read r's input copy of
/// collective k-2, which it then frees; (2) r copies its input on its stream (the copy outlives r's own tensor) and
/// records event ready[r, p]; (3) the rendezvous; (4) r's stream waits on every ready[j, p] and computes r's result
/// from the copies: the sum in rank order 0, 1, ..., n-1 accumulated in float32 and rounded once (the thread group's
/// arithmetic, bit for bit, so every rank gets the same bits), the concatenation, or root's tensor; then records
/// read_done[r, p]. Results are allocated and freed on their rank's stream.</para>
/// <para>send/recv: the sender copies on its stream and records an event; the receiver's stream waits on it, copies
/// into its own tensor, and frees the sender's copy on the sender's stream after that copy (stream-ordered, no host
/// wait). Host tensors, integer dtypes and groups that are not thread groups keep the staged path: copied to the host
/// after the stream drains, combined by the thread group, copied back on the caller's stream.</para>
/// </summary>
/// <param name="inner">The rank's thread group: it matches the calls and diagnoses mismatches.</param>
/// <param name="device">The GPU the ranks share.</param>
/// <param name="stageThroughHost">Every collective staged through host memory (the path before device collectives), for
/// telling a device-collective bug from a model bug.</param>
public sealed class CudaProcessGroup(IProcessGroup inner, CudaDevice device, bool stageThroughHost = false) : IProcessGroup
{
    private static readonly ConditionalWeakTable<object, GroupState> States = new();
    private static readonly ConditionalWeakTable<Tensor, Sent> Letters = new();
    private readonly GroupState? _state = inner is ThreadProcessGroup tg ? States.GetValue(tg.Rendezvous, _ => new GroupState(tg.WorldSize)) : null;
    private long _round;

    public int Rank => inner.Rank;
    public int WorldSize => inner.WorldSize;
    public string Name => inner.Name;

    /// <summary>Wraps both groups of a rank's context.</summary>
    public static ParallelContext Wrap(ParallelContext ctx, CudaDevice device, bool stageThroughHost = false) =>
        ctx with { Tp = new CudaProcessGroup(ctx.Tp, device, stageThroughHost), Pp = new CudaProcessGroup(ctx.Pp, device, stageThroughHost) };

    private Tensor Back(Tensor host, bool wasDevice) => wasDevice ? host.ToDevice(device) : host;

    private bool OnDevice(Tensor t) => !stageThroughHost && _state is not null && t.IsCuda && t.DType.IsFloatingPoint() && t.CudaDevice == device;

    public Tensor AllReduce(Tensor t) => OnDevice(t) ? Collective(CollectiveCall.On(CollectiveOp.AllReduce, t), t) : Back(inner.AllReduce(t.ToHost()), t.IsCuda);
    public Tensor AllGather(Tensor t, int dim = 0) => OnDevice(t) ? Collective(CollectiveCall.On(CollectiveOp.AllGather, t, dim: dim), t) : Back(inner.AllGather(t.ToHost(), dim), t.IsCuda);
    public Tensor ReduceScatter(Tensor t, int dim = 0) => OnDevice(t) ? Collective(CollectiveCall.On(CollectiveOp.ReduceScatter, t, dim: dim), t) : Back(inner.ReduceScatter(t.ToHost(), dim), t.IsCuda);
    public Tensor Broadcast(Tensor t, int root) => OnDevice(t) ? Collective(CollectiveCall.On(CollectiveOp.Broadcast, t, root: root), t) : Back(inner.Broadcast(t.ToHost(), root), t.IsCuda);
    public void Barrier() => inner.Barrier();

    public void Send(Tensor t, int dst)
    {
        if (!OnDevice(t)) { inner.Send(t.ToHost(), dst); return; }
        ((ThreadProcessGroup)inner).Rendezvous.Send(Rank, dst, t, x =>
        {
            device.MakeCurrent();
            var copy = CudaOps.Copy(x, x.DType);                                 // on the sender's stream
            var sent = CudaRuntime.EventCreate();
            CudaRuntime.EventRecord(sent, device.Stream);
            Letters.Add(copy, new Sent(sent, device.Stream));
            return copy;
        });
    }

    /// <summary>Received tensors land on the device (a pipeline stage on a GPU computes there).</summary>
    public Tensor Recv(int src)
    {
        var got = inner.Recv(src);
        if (!got.IsCuda || !Letters.TryGetValue(got, out var sent)) return got.ToDevice(device);
        device.MakeCurrent();
        var stream = device.Stream;
        CudaRuntime.StreamWaitEvent(stream, sent.Event);                         // the sender's copy is complete
        var mine = CudaOps.Copy(got, got.DType);                                 // on this rank's stream
        var read = CudaRuntime.EventCreate();
        CudaRuntime.EventRecord(read, stream);
        CudaRuntime.StreamWaitEvent(sent.Stream, read);                          // the sender's copy is freed after this read
        CudaTensors.Memory(got).Dispose();
        Letters.Remove(got);
        CudaRuntime.EventDestroy(read);
        CudaRuntime.EventDestroy(sent.Event);
        return mine;
    }

    private Tensor Collective(CollectiveCall call, Tensor t)
    {
        var st = _state!;
        int r = Rank, n = WorldSize, p = (int)(_round++ % 2);
        device.MakeCurrent();
        var stream = device.Stream;
        // (1) every rank has read this rank's copy from two collectives ago: free it
        for (int j = 0; j < n; j++)
            if (st.ReadDone[j, p] != 0) CudaRuntime.StreamWaitEvent(stream, st.ReadDone[j, p]);
        st.Inputs[r, p]?.Storage.Device!.Dispose();
        // (2) this rank's input, copied on its stream
        var mine = CudaOps.Copy(t, t.DType);
        st.Inputs[r, p] = mine;
        if (st.Ready[r, p] == 0) st.Ready[r, p] = CudaRuntime.EventCreate();
        CudaRuntime.EventRecord(st.Ready[r, p], stream);
        // (3) the calls agree (or every rank gets the diagnosis)
        ((ThreadProcessGroup)inner).Rendezvous.Collective(r, call, mine, (c, inputs) =>
        {
            CollectiveMath.Validate(Name, c, inputs);
            return null;
        });
        // (4) this rank's result from every rank's copy, on this rank's stream
        var xs = new Tensor[n];
        for (int j = 0; j < n; j++)
        {
            xs[j] = st.Inputs[j, p]!;
            if (j != r) CudaRuntime.StreamWaitEvent(stream, st.Ready[j, p]);
        }
        Tensor result;
        switch (call.Op)
        {
            case CollectiveOp.AllReduce:
                result = Sum(xs, x => x);
                break;
            case CollectiveOp.ReduceScatter:
            {
                int dim = call.Dim ?? 0, chunk = t.Shape[dim] / n;
                result = Sum(xs, x => x.Narrow(dim, r * chunk, chunk));
                break;
            }
            case CollectiveOp.AllGather:
            {
                int dim = call.Dim ?? 0, size = t.Shape[dim];
                var shape = t.ShapeArray;
                shape[dim] = size * n;
                result = CudaTensors.Empty(device, t.DType, shape);
                for (int j = 0; j < n; j++) CudaOps.CopyInto(xs[j], result.Narrow(dim, j * size, size));
                break;
            }
            case CollectiveOp.Broadcast:
                result = CudaOps.Copy(xs[call.Root ?? 0], t.DType);
                break;
            default:
                throw new InvalidOperationException($"{Name}: {call} is not a device collective");
        }
        if (st.ReadDone[r, p] == 0) st.ReadDone[r, p] = CudaRuntime.EventCreate();
        CudaRuntime.EventRecord(st.ReadDone[r, p], stream);
        return result;
    }

    // sum_j xs[j] in rank order: float32 accumulation (each add rounds to float32), one rounding to the dtype, as CollectiveMath.Sum
    private static Tensor Sum(Tensor[] xs, Func<Tensor, Tensor> view)
    {
        var acc = CudaOps.Copy(view(xs[0]), DType.Float32);
        for (int j = 1; j < xs.Length; j++) acc = CudaOps.Binary<AddOp>(acc, view(xs[j]), DType.Float32);
        return xs[0].DType == DType.Float32 ? acc : CudaOps.Copy(acc, xs[0].DType);
    }

    private sealed class GroupState(int n)
    {
        public readonly Tensor?[,] Inputs = new Tensor?[n, 2];
        public readonly nint[,] Ready = new nint[n, 2];
        public readonly nint[,] ReadDone = new nint[n, 2];
    }

    private sealed record Sent(nint Event, nint Stream);
}
