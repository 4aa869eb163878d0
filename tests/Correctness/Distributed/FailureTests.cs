using System.Diagnostics;
using Harness.Engine.Distributed;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Distributed;

/// <summary>
/// What a rank sees when the ranks of a group disagree, when one never arrives, or when one throws: an error that names
/// every rank's call, on every rank, promptly; never a hang.
/// </summary>
public class FailureTests
{
    private static RankFailedException RunExpectingFailure(int n, Action<int> body, TimeSpan timeout, out TimeSpan elapsed)
    {
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<RankFailedException>(() => ThreadWorld.Run(n, body, timeout));
        elapsed = clock.Elapsed;
        return e;
    }

    [Fact]
    public void Mismatched_collectives_fail_on_every_rank_naming_both_calls()
    {
        // Bug guarded: rank 1 does all_gather where rank 0 does all_reduce; without the check both would
        // compute garbage (or hang) instead of saying which rank called what.
        var e = RunExpectingFailure(2, rank =>
        {
            var tp = ThreadWorld.Current.Group([0, 1], "tp");
            if (rank == 0) tp.AllReduce(Tensor.Zeros(DType.BFloat16, 4, 64));
            else tp.AllGather(Tensor.Zeros(DType.BFloat16, 2, 64), 0);
        }, TimeSpan.FromSeconds(10), out _);

        var e0 = Assert.IsType<CollectiveException>(e.ErrorOf(0));
        var e1 = Assert.IsType<CollectiveException>(e.ErrorOf(1));
        Assert.Equal(CollectiveFailure.Mismatch, e0.Failure);
        Assert.Equal(CollectiveFailure.Mismatch, e1.Failure);
        Assert.Equal("tp[0,1]: collective mismatch: rank 0 called all_reduce bfloat16 [4, 64] while rank 1 called all_gather bfloat16 [2, 64] (dim 0)", e0.Message);
        Assert.Equal("tp[0,1]: collective mismatch: rank 1 called all_gather bfloat16 [2, 64] (dim 0) while rank 0 called all_reduce bfloat16 [4, 64]", e1.Message);
        Assert.Contains("rank 0 failed: CollectiveException: tp[0,1]: collective mismatch", e.Message);
        Assert.Contains("rank 1 failed: CollectiveException: tp[0,1]: collective mismatch", e.Message);
    }

    [Fact]
    public void Shape_and_dtype_mismatches_are_named_too()
    {
        var e = RunExpectingFailure(3, rank =>
        {
            var g = ThreadWorld.Current.Group([0, 1, 2], "tp");
            g.AllReduce(Tensor.Zeros(rank == 2 ? DType.Float16 : DType.Float32, 4, rank == 1 ? 63 : 64));
        }, TimeSpan.FromSeconds(10), out _);
        Assert.Equal(
            "tp[0,1,2]: collective mismatch: rank 2 called all_reduce float16 [4, 64] while rank 0 called all_reduce float32 [4, 64]; rank 1 called all_reduce float32 [4, 63]",
            e.ErrorOf(2)!.Message);
    }

    [Fact]
    public void A_rank_that_never_arrives_fails_the_waiting_rank_after_the_timeout_naming_it()
    {
        using var release = new ManualResetEventSlim();
        try
        {
            var e = RunExpectingFailure(2, rank =>
            {
                var tp = ThreadWorld.Current.Group([0, 1], "tp");
                if (rank == 0) tp.AllReduce(Tensor.Zeros(DType.Float32, 4, 64));
                else
                {
                    ThreadWorld.Current.Group([1], "solo").AllGather(Tensor.Zeros(DType.Float32, 2, 64));
                    release.Wait(TimeSpan.FromSeconds(20)); // stuck outside any collective of tp
                }
            }, TimeSpan.FromSeconds(1), out var elapsed);

            Assert.True(elapsed < TimeSpan.FromSeconds(10), $"took {elapsed}");
            var e0 = Assert.IsType<CollectiveException>(e.ErrorOf(0));
            Assert.Equal(CollectiveFailure.Timeout, e0.Failure);
            Assert.Matches(@"^tp\[0,1\]: rank 0 waited [12]\.\d s in all_reduce float32 \[4, 64\]; rank 1 never arrived " +
                           @"\(its last collective: all_gather float32 \[2, 64\] \(dim 0\) on solo\[1\], returned\)$", e0.Message);
            // Rank 1 is still busy in its own code: reported, not waited for forever.
            Assert.Contains("rank 1 did not finish within 1.0 s after rank 0 failed", e.ErrorOf(1)!.Message);
        }
        finally
        {
            release.Set();
        }
    }

    [Fact]
    public void A_rank_that_returned_without_calling_fails_the_waiting_rank_at_once()
    {
        var e = RunExpectingFailure(2, rank =>
        {
            if (rank == 0) ThreadWorld.Current.Group([0, 1], "pp").Recv(1);
        }, TimeSpan.FromSeconds(30), out var elapsed);
        Assert.True(elapsed < TimeSpan.FromSeconds(10), $"waited {elapsed} for a rank that had returned");
        Assert.Matches(@"^pp\[0,1\]: rank 0 waited \d+\.\d s in recv from rank 1; rank 1 returned from its body without sending \(its last collective: none\)$",
            e.ErrorOf(0)!.Message);
        Assert.Equal([0], e.FailedRanks);
    }

    [Fact]
    public void An_exception_in_one_rank_releases_the_others_promptly_and_is_named_first()
    {
        var e = RunExpectingFailure(3, rank =>
        {
            var g = ThreadWorld.Current.Group([0, 1, 2], "tp");
            if (rank == 1)
            {
                Thread.Sleep(100);
                throw new InvalidOperationException("boom\nsecond line of the error");
            }
            g.AllReduce(Tensor.Zeros(DType.Float32, 4, 64));
        }, TimeSpan.FromSeconds(30), out var elapsed);

        Assert.True(elapsed < TimeSpan.FromSeconds(10), $"the other ranks waited {elapsed} for a rank that had thrown");
        Assert.StartsWith("3 of 3 ranks failed:" + Environment.NewLine + "  rank 1 failed: InvalidOperationException: boom" + Environment.NewLine, e.Message);
        Assert.DoesNotContain("second line", e.Message);
        Assert.IsType<InvalidOperationException>(e.InnerException);
        Assert.Equal(3, e.InnerExceptions.Count);
        foreach (int r in new[] { 0, 2 })
        {
            var released = Assert.IsType<CollectiveException>(e.ErrorOf(r));
            Assert.Equal(CollectiveFailure.PeerFailed, released.Failure);
            Assert.Equal($"tp[0,1,2]: rank {r} released from all_reduce float32 [4, 64]: rank 1 failed: InvalidOperationException: boom", released.Message);
        }
    }

    [Fact]
    public void Two_groups_called_in_opposite_orders_time_out_showing_where_each_rank_waits()
    {
        // A cross-group ordering deadlock (rank 0: a then b; rank 1: b then a) must end in an error that says rank 1 is
        // stuck in b, not in a silent hang.
        var e = RunExpectingFailure(2, rank =>
        {
            var a = ThreadWorld.Current.Group([0, 1], "a");
            var b = ThreadWorld.Current.Group([0, 1], "b");
            if (rank == 0) { a.AllReduce(Tensor.Scalar(1)); b.AllReduce(Tensor.Scalar(1)); }
            else { b.AllReduce(Tensor.Scalar(1)); a.AllReduce(Tensor.Scalar(1)); }
        }, TimeSpan.FromSeconds(1), out var elapsed);
        Assert.True(elapsed < TimeSpan.FromSeconds(10), $"took {elapsed}");
        var first = e.InnerException!.Message;
        Assert.Matches(@"rank 1 never arrived \(its last collective: all_reduce float32 \[\] on b\[0,1\], (still waiting|failed)\)|" +
                       @"rank 0 never arrived \(its last collective: all_reduce float32 \[\] on a\[0,1\], (still waiting|failed)\)", first);
    }

    [Fact]
    public void Reduce_scatter_of_a_size_that_does_not_divide_fails_on_every_rank_with_shape_and_world_size()
    {
        var e = RunExpectingFailure(2, rank =>
            ThreadWorld.Current.Group([0, 1], "tp").ReduceScatter(Tensor.Zeros(DType.Float32, 5, 64), 0), TimeSpan.FromSeconds(10), out _);
        foreach (int r in new[] { 0, 1 })
        {
            var ce = Assert.IsType<CollectiveException>(e.ErrorOf(r));
            Assert.Equal(CollectiveFailure.InvalidArgument, ce.Failure);
            Assert.Equal("tp[0,1]: reduce_scatter float32 [5, 64] (dim 0): size 5 of dim 0 does not divide into 2 equal chunks (world size 2)", ce.Message);
        }
    }

    [Fact]
    public void Send_to_itself_or_outside_the_group_is_refused_at_once()
    {
        ThreadWorld.Run(2, rank =>
        {
            var g = ThreadWorld.Current.Group([0, 1], "pp");
            var self = Assert.Throws<CollectiveException>(() => g.Send(Tensor.Scalar(1), rank));
            Assert.Contains("cannot send to itself", self.Message);
            var outside = Assert.Throws<CollectiveException>(() => g.Recv(2));
            Assert.Contains("rank 2 is not in a group of 2", outside.Message);
        }, TimeSpan.FromSeconds(10));
    }
}
