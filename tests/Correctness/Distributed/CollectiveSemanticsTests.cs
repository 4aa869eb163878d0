using Harness.Engine.Distributed;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Distributed;

/// <summary>
/// Each collective of ThreadProcessGroup at world sizes 1-4 against a plain single-threaded computation of what
/// torch.distributed returns; plus the numerics the contract promises (fixed-order float32 sums, bf16 rounded once,
/// int64 exact, same bits on every rank and every run) and send/recv FIFO order.
/// </summary>
public class CollectiveSemanticsTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private static Tensor Input(int rank, DType dtype = DType.Float32, params int[] shape) =>
        Tensor.Randn(dtype, 1000 + (ulong)rank, shape.Length == 0 ? [4, 6] : shape);

    private static ThreadProcessGroup World(int n, int rank) =>
        ThreadWorld.Current.Group(rank, Enumerable.Range(0, n).ToArray(), "w");

    /// <summary>The plain left-to-right float32 sum x0 + x1 + ... + x(n-1), element by element.</summary>
    private static float[] PlainSum(int n, DType dtype = DType.Float32, params int[] shape)
    {
        var acc = Input(0, dtype, shape).ToFloatArray();
        for (int r = 1; r < n; r++)
        {
            var x = Input(r, dtype, shape).ToFloatArray();
            for (int i = 0; i < acc.Length; i++) acc[i] += x[i];
        }
        return acc;
    }

    [Theory, InlineData(1), InlineData(2), InlineData(3), InlineData(4)]
    public void All_reduce_gives_every_rank_the_rank_ordered_float32_sum(int n)
    {
        var results = ThreadWorld.Run(n, rank => World(n, rank).AllReduce(Input(rank)), Timeout);
        var expected = Tensor.FromArray(PlainSum(n), 4, 6);
        foreach (var r in results) Assert.True(r.BitwiseEquals(expected), $"world {n}: a rank's all_reduce is not the plain sum");
    }

    [Theory, InlineData(1), InlineData(2), InlineData(3), InlineData(4)]
    public void All_gather_concatenates_in_rank_order_along_the_dim(int n)
    {
        foreach (int dim in new[] { 0, 1, -1 })
        {
            var results = ThreadWorld.Run(n, rank => World(n, rank).AllGather(Input(rank), dim), Timeout);
            var expected = Tensor.Cat(Enumerable.Range(0, n).Select(r => Input(r)).ToArray(), dim);
            foreach (var r in results) Assert.True(r.BitwiseEquals(expected), $"world {n}, dim {dim}: all_gather is not the concatenation");
        }
    }

    [Theory, InlineData(1), InlineData(2), InlineData(3), InlineData(4)]
    public void Reduce_scatter_gives_rank_r_chunk_r_of_the_sum(int n)
    {
        foreach (int dim in new[] { 0, 1 })
        {
            int[] shape = dim == 0 ? [2 * n, 3] : [3, 2 * n];
            var results = ThreadWorld.Run(n, rank => World(n, rank).ReduceScatter(Input(rank, DType.Float32, shape), dim), Timeout);
            var sum = Tensor.FromArray(PlainSum(n, DType.Float32, shape), shape);
            for (int r = 0; r < n; r++)
                Assert.True(results[r].BitwiseEquals(sum.Narrow(dim, 2 * r, 2).Contiguous()), $"world {n}, dim {dim}: rank {r} did not get chunk {r} of the sum");
        }
    }

    [Theory, InlineData(1), InlineData(2), InlineData(3), InlineData(4)]
    public void Broadcast_gives_every_rank_the_roots_tensor(int n)
    {
        for (int root = 0; root < n; root++)
        {
            int rt = root;
            var results = ThreadWorld.Run(n, rank => World(n, rank).Broadcast(Input(rank), rt), Timeout);
            foreach (var r in results) Assert.True(r.BitwiseEquals(Input(rt)), $"world {n}: broadcast from root {rt} is not root's tensor");
        }
    }

    [Theory, InlineData(1), InlineData(2), InlineData(3), InlineData(4)]
    public void Barrier_lets_no_rank_pass_before_all_arrived(int n)
    {
        int arrived = 0;
        var seen = ThreadWorld.Run(n, rank =>
        {
            if (rank == 0) Thread.Sleep(50);
            Interlocked.Increment(ref arrived);
            World(n, rank).Barrier();
            return Volatile.Read(ref arrived);
        }, Timeout);
        Assert.All(seen, s => Assert.Equal(n, s));
    }

    [Fact]
    public void Results_are_new_tensors_and_inputs_are_untouched()
    {
        var inputs = Enumerable.Range(0, 2).Select(r => Input(r)).ToArray();
        var before = inputs.Select(t => t.ToBytes()).ToArray();
        var results = ThreadWorld.Run(2, rank => World(2, rank).AllReduce(inputs[rank]), Timeout);
        Assert.NotSame(results[0].Storage, results[1].Storage);
        for (int r = 0; r < 2; r++)
        {
            Assert.NotSame(inputs[r].Storage, results[r].Storage);
            Assert.Equal(before[r], inputs[r].ToBytes());
        }
    }

    [Fact]
    public void Strided_inputs_are_read_as_their_logical_values()
    {
        var results = ThreadWorld.Run(2, rank => World(2, rank).AllGather(Input(rank).T(), 0), Timeout);
        var expected = Tensor.Cat([Input(0).T(), Input(1).T()], 0);
        Assert.True(results[0].BitwiseEquals(expected));
    }

    [Fact]
    public void Float32_all_reduce_is_bit_identical_across_ranks_and_runs_and_equals_the_left_to_right_sum()
    {
        const int n = 4;
        int[] shape = [64, 33];
        var expected = Tensor.FromArray(PlainSum(n, DType.Float32, shape), shape);
        for (int run = 0; run < 5; run++)
        {
            var results = ThreadWorld.Run(n, rank =>
            {
                if (rank == (run % n)) Thread.Sleep(5); // vary who arrives last
                return World(n, rank).AllReduce(Input(rank, DType.Float32, shape));
            }, Timeout);
            for (int r = 0; r < n; r++)
                Assert.True(results[r].BitwiseEquals(expected), $"run {run}, rank {r}: all_reduce bits differ from the left-to-right float32 sum");
        }
    }

    [Fact]
    public void Bf16_all_reduce_sums_in_float32_and_rounds_once()
    {
        // 1 + 2^-8 + 2^-8: rounding to bf16 after each add gives 1 (1 + 2^-8 is a tie, to even); once at the end, 1 + 2^-7.
        float[] values = [1f, 1f / 256, 1f / 256];
        var results = ThreadWorld.Run(3, rank =>
            World(3, rank).AllReduce(Tensor.FromArray([values[rank]], 1).To(DType.BFloat16)), Timeout);
        foreach (var r in results)
        {
            Assert.Equal(DType.BFloat16, r.DType);
            Assert.Equal(1f + 1f / 128, r.ToFloatArray()[0]);
        }
    }

    [Fact]
    public void Fp16_all_reduce_sums_in_float32_and_rounds_once()
    {
        // fp16 ulp at 1 is 2^-10: 1 + 2^-11 + 2^-11 rounds to 1 step by step, to 1 + 2^-10 once.
        float[] values = [1f, 1f / 2048, 1f / 2048];
        var results = ThreadWorld.Run(3, rank =>
            World(3, rank).AllReduce(Tensor.FromArray([(Half)values[rank]], 1)), Timeout);
        foreach (var r in results) Assert.Equal(1f + 1f / 1024, r.ToFloatArray()[0]);
    }

    [Fact]
    public void Int64_all_reduce_is_exact_beyond_float64_precision()
    {
        long big = (1L << 60) + 1;
        var results = ThreadWorld.Run(3, rank => World(3, rank).AllReduce(Tensor.FromArray([big, -rank], 2)), Timeout);
        foreach (var r in results) Assert.Equal([3 * big, -3L], r.ToInt64Array());
    }

    [Fact]
    public void Send_and_recv_deliver_in_the_order_sent_per_pair()
    {
        var received = ThreadWorld.Run(3, rank =>
        {
            var g = World(3, rank);
            var got = new List<double>();
            if (rank == 0)
            {
                for (int i = 0; i < 5; i++) g.Send(Tensor.Scalar(i), 2);
            }
            else if (rank == 1)
            {
                for (int i = 0; i < 5; i++) g.Send(Tensor.Scalar(100 + i), 2);
            }
            else
            {
                // Interleave sources; each source's tensors must come in its own send order.
                for (int i = 0; i < 5; i++)
                {
                    got.Add(g.Recv(1).Item());
                    got.Add(g.Recv(0).Item());
                }
            }
            return got;
        }, Timeout);
        Assert.Equal([100, 0, 101, 1, 102, 2, 103, 3, 104, 4], received[2]);
    }

    [Fact]
    public void Recv_gets_a_copy_made_at_send_time()
    {
        var got = ThreadWorld.Run(2, rank =>
        {
            var g = World(2, rank);
            if (rank == 0)
            {
                var t = Tensor.FromArray([1f, 2f], 2);
                g.Send(t, 1);
                t.Fill(-1);
                g.Barrier();
                return (float[]?)null;
            }
            var r = g.Recv(0);
            g.Barrier();
            return r.ToFloatArray();
        }, Timeout);
        Assert.Equal([1f, 2f], got[1]!);
    }
}
