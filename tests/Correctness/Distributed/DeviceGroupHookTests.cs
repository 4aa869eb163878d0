using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Distributed;

/// <summary>
/// What the GPU process group (CudaProcessGroup) builds on, checked on the host: the rendezvous with a compute hook still
/// matches the calls and diagnoses a mismatch, hands the hook every rank's input, and CollectiveMath.Validate rejects
/// bad arguments with Compute's own messages (a device group validates there and computes on its streams).
/// </summary>
public class DeviceGroupHookTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public void A_compute_hook_sees_every_ranks_input_and_its_result_is_shared()
    {
        int calls = 0;
        var results = ThreadWorld.Run(3, rank =>
        {
            var g = ThreadWorld.Current.Group(rank, [0, 1, 2], "w");
            var t = Tensor.FromArray(new float[] { rank }, 1);
            return g.Rendezvous.Collective(rank, CollectiveCall.On(CollectiveOp.AllReduce, t), t, (call, inputs) =>
            {
                Interlocked.Increment(ref calls);
                return Tensor.FromArray(inputs.Select(x => x!.ToFloatArray()[0]).ToArray(), inputs.Count);
            });
        }, Timeout);
        Assert.Equal(1, calls);                                             // the last arriver computes, once
        foreach (var r in results) Assert.Equal(new float[] { 0, 1, 2 }, r!.ToFloatArray());
    }

    [Fact]
    public void A_mismatch_is_diagnosed_before_the_hook_runs()
    {
        bool hookRan = false;
        var e = Assert.ThrowsAny<Exception>(() => ThreadWorld.Run(2, rank =>
        {
            var g = ThreadWorld.Current.Group(rank, [0, 1], "w");
            var t = Tensor.Zeros(DType.Float32, rank == 0 ? 4 : 5);
            g.Rendezvous.Collective(rank, CollectiveCall.On(CollectiveOp.AllReduce, t), t, (_, _) => { hookRan = true; return null; });
        }, Timeout));
        Assert.False(hookRan);
        Assert.Contains("collective mismatch", e.ToString());
    }

    [Fact]
    public void A_clone_hook_makes_the_letter_the_receiver_gets()
    {
        var got = ThreadWorld.Run(2, rank =>
        {
            var g = ThreadWorld.Current.Group(rank, [0, 1], "w");
            if (rank == 0)
            {
                g.Rendezvous.Send(0, 1, Tensor.FromArray(new float[] { 7 }, 1), t => Elementwise.Add(t, 1f));
                return null;
            }
            return g.Recv(0);
        }, Timeout);
        Assert.Equal(new float[] { 8 }, got[1]!.ToFloatArray());
    }

    [Theory]
    [InlineData(CollectiveOp.ReduceScatter, 0, 0)]   // 5 rows do not split over 2 ranks
    [InlineData(CollectiveOp.AllGather, 3, 0)]       // no dim 3
    [InlineData(CollectiveOp.Broadcast, 0, 2)]       // no rank 2
    public void Validate_rejects_what_Compute_rejects_with_the_same_message(CollectiveOp op, int dim, int root)
    {
        var t = Tensor.Zeros(DType.Float32, 5, 3);
        var call = CollectiveCall.On(op, t, dim: op == CollectiveOp.Broadcast ? null : dim, root: op == CollectiveOp.Broadcast ? root : null);
        var inputs = new Tensor?[] { t, t };
        var viaCompute = Assert.Throws<CollectiveException>(() => CollectiveMath.Compute("w", call, inputs));
        var viaValidate = Assert.Throws<CollectiveException>(() => CollectiveMath.Validate("w", call, inputs));
        Assert.Equal(viaCompute.Message, viaValidate.Message);
    }
}
