using Harness.Engine.Distributed;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Distributed;

/// <summary>
/// vLLM's layout (world rank = pp_rank * tp_size + tp_rank; TP groups consecutive, PP groups strided by tp_size) and
/// subgroups of one world used at the same time by different ranks without interfering.
/// </summary>
public class LayoutTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public void Tp2_pp2_gives_each_rank_vllms_groups()
    {
        var contexts = ThreadWorld.Run(4, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, tpSize: 2, ppSize: 2);
            var tp = (ThreadProcessGroup)ctx.Tp;
            var pp = (ThreadProcessGroup)ctx.Pp;
            return (ctx.WorldRank, ctx.TpRank, ctx.PpRank, Tp: tp.Name, TpRanks: string.Join(",", tp.WorldRanks), Pp: pp.Name, PpRanks: string.Join(",", pp.WorldRanks));
        }, Timeout);
        Assert.Equal((0, 0, 0, "tp[0,1]", "0,1", "pp[0,2]", "0,2"), contexts[0]);
        Assert.Equal((1, 1, 0, "tp[0,1]", "0,1", "pp[1,3]", "1,3"), contexts[1]);
        Assert.Equal((2, 0, 1, "tp[2,3]", "2,3", "pp[0,2]", "0,2"), contexts[2]);
        Assert.Equal((3, 1, 1, "tp[2,3]", "2,3", "pp[1,3]", "1,3"), contexts[3]);
    }

    [Theory, InlineData(1, 1), InlineData(4, 1), InlineData(1, 4), InlineData(2, 3), InlineData(3, 2)]
    public void Layout_ranks_partition_the_world(int tp, int pp)
    {
        for (int rank = 0; rank < tp * pp; rank++)
        {
            var tpRanks = ParallelLayout.TpGroupRanks(rank, tp, pp);
            var ppRanks = ParallelLayout.PpGroupRanks(rank, tp, pp);
            Assert.Equal(rank / tp * tp + Array.IndexOf(tpRanks, rank), rank);
            Assert.Equal(rank, ppRanks[rank / tp]);
            Assert.All(ppRanks, r => Assert.Equal(rank % tp, r % tp));
        }
    }

    [Fact]
    public void Layout_needs_tp_times_pp_ranks()
    {
        var e = Assert.Throws<ArgumentException>(() => new ThreadWorld(3).LayoutFor(0, 2, 2));
        Assert.Contains("needs 4 ranks; the world has 3", e.Message);
    }

    [Fact]
    public void Tp_groups_of_both_stages_reduce_at_once_without_mixing()
    {
        var results = ThreadWorld.Run(4, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, 2, 2);
            var sums = new List<double>();
            for (int i = 0; i < 20; i++)
                sums.Add(ctx.Tp.AllReduce(Tensor.Scalar(rank * 10 + i)).Item());
            var pp = ctx.Pp.AllGather(Tensor.FromArray([(float)rank], 1));
            return (sums, pp: pp.ToFloatArray());
        }, Timeout);
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal(0 + 10 + 2 * i, results[0].sums[i]);
            Assert.Equal(0 + 10 + 2 * i, results[1].sums[i]);
            Assert.Equal(20 + 30 + 2 * i, results[2].sums[i]);
            Assert.Equal(20 + 30 + 2 * i, results[3].sums[i]);
        }
        Assert.Equal([0f, 2f], results[0].pp);
        Assert.Equal([1f, 3f], results[1].pp);
        Assert.Equal([0f, 2f], results[2].pp);
    }

    [Fact]
    public void Pipeline_stages_pass_activations_over_pp_send_recv()
    {
        var outputs = ThreadWorld.Run(4, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, 2, 2);
            var h = ctx.IsFirstStage ? Tensor.FromArray([1f, 2f], 2) : ctx.Pp.Recv(ctx.PpRank - 1);
            h = ctx.Tp.AllReduce(h); // each stage: a row-parallel layer's sum over TP ranks
            if (!ctx.IsLastStage) ctx.Pp.Send(h, ctx.PpRank + 1);
            return h.ToFloatArray();
        }, Timeout);
        Assert.Equal([4f, 8f], outputs[2]);
        Assert.Equal([4f, 8f], outputs[3]);
    }
}
