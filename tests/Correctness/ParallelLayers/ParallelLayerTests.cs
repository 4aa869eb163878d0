using Harness.Comparison;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.ParallelLayers;

/// <summary>
/// Each parallel layer at TP = 1, 2, 4 (ranks as threads) against the same layer computed unsharded: shards loaded
/// from the full weights give the full result after their collective, on every rank.
/// </summary>
[Collection(SerialCollection.Name)]
public class ParallelLayerTests
{
    private static readonly TolerancePolicy Policy = Tolerances.Float32Gemm;

    private static void AssertAllRanks(string what, Tensor expected, Tensor[] perRank)
    {
        for (int r = 0; r < perRank.Length; r++)
        {
            var c = TensorComparer.Compare($"{what} rank {r}", perRank[r], expected, Policy);
            Assert.True(c.Passed, c.ToString());
        }
    }

    private static Tensor[] OnTp(int tp, Func<ParallelContext, Tensor> body) =>
        ThreadWorld.Run(tp, rank => body(ThreadWorld.Layout(rank, tp, 1)), TimeSpan.FromSeconds(30));

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void Column_parallel_with_gather_output_equals_the_full_linear(int tp)
    {
        var w = Tensor.Normal(DType.Float32, 1, 0, 0.1f, 96, 40);
        var b = Tensor.Normal(DType.Float32, 2, 0, 0.1f, 96);
        var x = Tensor.Normal(DType.Float32, 3, 0, 1, 5, 40);
        var outputs = OnTp(tp, ctx => new ColumnParallelLinear(w, b, ctx.Tp, gatherOutput: true, "proj").Forward(x));
        AssertAllRanks("column-parallel", new Linear(w, b).Forward(x), outputs);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void Column_then_row_parallel_equals_the_full_two_layer_product(int tp)
    {
        // The Megatron pair: column-parallel output feeds a row-parallel layer with input_is_parallel, one all-reduce.
        var w1 = Tensor.Normal(DType.Float32, 1, 0, 0.1f, 64, 32);
        var w2 = Tensor.Normal(DType.Float32, 2, 0, 0.1f, 32, 64);
        var b2 = Tensor.Normal(DType.Float32, 3, 0, 0.1f, 32);
        var x = Tensor.Normal(DType.Float32, 4, 0, 1, 7, 32);
        var outputs = OnTp(tp, ctx =>
        {
            var h = new ColumnParallelLinear(w1, null, ctx.Tp, gatherOutput: false, "up").Forward(x); // [7, 64/tp]
            return new RowParallelLinear(w2, b2, ctx.Tp, inputIsParallel: true, reduceResults: true, "down").Forward(h);
        });
        AssertAllRanks("column->row", new Linear(w2, b2).Forward(new Linear(w1).Forward(x)), outputs);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void Merged_gate_up_gives_each_rank_its_gate_and_up_shards(int tp)
    {
        var gate = Tensor.Normal(DType.Float32, 1, 0, 0.1f, 48, 16);
        var up = Tensor.Normal(DType.Float32, 2, 0, 0.1f, 48, 16);
        var x = Tensor.Normal(DType.Float32, 3, 0, 1, 3, 16);
        var outputs = ThreadWorld.Run(tp, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, tp, 1);
            var local = new MergedColumnParallelLinear([gate, up], ctx.Tp, ["gate_proj", "up_proj"]).Forward(x); // [3, 96/tp]
            int each = 48 / tp;
            var g = new Linear(gate).Forward(x).Narrow(-1, rank * each, each);
            var u = new Linear(up).Forward(x).Narrow(-1, rank * each, each);
            return TensorComparer.Compare($"gate_up rank {rank}", local, Tensor.Cat([g, u], -1), Policy);
        }, TimeSpan.FromSeconds(30));
        foreach (var r in outputs) Assert.True(r.Passed, r.ToString());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void Vocab_parallel_embedding_pads_the_vocab_and_masks_foreign_ids(int tp)
    {
        var table = Tensor.Normal(DType.Float32, 5, 0, 1, 200, 8); // 200 is not a multiple of 64 * tp
        var ids = Tensor.FromArray([0L, 63L, 64L, 127L, 128L, 199L, 5L], 7);
        var outputs = OnTp(tp, ctx =>
        {
            var e = new VocabParallelEmbedding(table, ctx.Tp, "embed_tokens");
            Assert.Equal(Sharding.RoundUp(200, 64 * tp), e.PaddedVocabSize);
            return e.Forward(ids);
        });
        AssertAllRanks("embedding", Embedding.Lookup(table, ids), outputs);
    }

    [Fact]
    public void Vocab_parallel_embedding_rejects_an_id_outside_the_vocab()
    {
        var table = Tensor.Normal(DType.Float32, 5, 0, 1, 200, 8);
        var ex = Assert.Throws<IndexOutOfRangeException>(() =>
            new VocabParallelEmbedding(table, new SingleProcessGroup(), "embed_tokens").Forward(Tensor.FromArray([3L, 200L], 2)));
        Assert.Contains("token id 200 at position 1 is outside the vocabulary of 200", ex.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void Parallel_lm_head_gathers_logits_and_trims_the_padding(int tp)
    {
        var head = Tensor.Normal(DType.Float32, 6, 0, 0.1f, 200, 8);
        var h = Tensor.Normal(DType.Float32, 7, 0, 1, 3, 8);
        var outputs = OnTp(tp, ctx => new ParallelLMHead(head, ctx.Tp).Forward(h));
        AssertAllRanks("lm_head", new Linear(head).Forward(h), outputs);
    }

    [Theory]
    [InlineData(2, 4, 2)]  // kv heads split
    [InlineData(4, 4, 2)]  // kv heads replicated: ranks 0,1 share kv head 0; ranks 2,3 kv head 1
    [InlineData(4, 8, 1)]  // one kv head (MQA) on every rank
    public void Qkv_parallel_splits_query_heads_and_splits_or_replicates_kv_heads(int tp, int heads, int kvHeads)
    {
        const int hd = 4, hidden = 16;
        var weights = new DictionaryWeights(new Dictionary<string, Tensor>
        {
            ["q.weight"] = Tensor.Normal(DType.Float32, 1, 0, 0.1f, heads * hd, hidden),
            ["k.weight"] = Tensor.Normal(DType.Float32, 2, 0, 0.1f, kvHeads * hd, hidden),
            ["v.weight"] = Tensor.Normal(DType.Float32, 3, 0, 0.1f, kvHeads * hd, hidden),
        });
        var x = Tensor.Normal(DType.Float32, 4, 0, 1, 5, hidden);
        var fullK = new Linear(weights.Get("k.weight")).Forward(x);
        var results = ThreadWorld.Run(tp, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, tp, 1);
            var qkv = new QKVParallelLinear(weights, "q", "k", "v", heads, kvHeads, hd, ctx.Tp);
            var (q, k, _) = qkv.Forward(x);
            int kvHead = kvHeads >= tp ? rank * (kvHeads / tp) : rank * kvHeads / tp;
            var expectedK = fullK.Narrow(-1, kvHead * hd, qkv.LocalKvHeads * hd);
            return (q.Shape[1], TensorComparer.Compare($"k rank {rank}", k, expectedK, Policy));
        }, TimeSpan.FromSeconds(30));
        foreach (var (qWidth, k) in results)
        {
            Assert.Equal(heads / tp * hd, qWidth);
            Assert.True(k.Passed, k.ToString());
        }
    }

    [Fact]
    public void Heads_that_do_not_divide_by_tp_are_refused_naming_the_layer()
    {
        var weights = new DictionaryWeights(new Dictionary<string, Tensor>
        {
            ["q.weight"] = Tensor.Zeros(DType.Float32, 12, 4), ["k.weight"] = Tensor.Zeros(DType.Float32, 4, 4), ["v.weight"] = Tensor.Zeros(DType.Float32, 4, 4),
        });
        var ex = Assert.ThrowsAny<Exception>(() => ThreadWorld.Run(2, rank =>
            new QKVParallelLinear(weights, "q", "k", "v", 3, 1, 4, ThreadWorld.Layout(rank, 2, 1).Tp), TimeSpan.FromSeconds(10)));
        Assert.Contains("q: 3 attention heads are not divisible by the tensor-parallel size 2", ex.ToString());
    }
}
