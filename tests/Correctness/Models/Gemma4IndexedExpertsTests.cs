using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Layers;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// Gemma4's MoE block as a CUDA graph step runs it (issue 20 item 2): one token through its k experts from the expert
/// ids where they live (<see cref="Gemma4Experts.ForwardIndexed"/> over <see cref="IndexedExperts"/>), never read back.
/// The host ops are the naive versions, so on the host the indexed block must equal HF's per-expert loop
/// (<see cref="Gemma4Experts.ForwardLoop"/>) bit for bit, in fp32 and bf16, on the recorded tiny MoE checkpoints; the
/// GPU side (the kernels, the graph loop's tokens) is check-gpu's moe-indexed-experts and gemma4-moe-graph-decode-*.
/// </summary>
public class Gemma4IndexedExpertsTests
{
    private static string ModelDir(string dtype) => Path.Combine(Fixtures.DefaultDirectory(), "models", TinyGemma4.ModelName("moe") + "-" + dtype);

    public static TheoryData<string> Dtypes => ["fp32", "bf16"];

    // Every layer's router and experts of the tiny MoE checkpoint, and per layer some tokens' residual rows (seeded); the
    // checkpoint stays open while the weights are used.
    private sealed class Tiny : IDisposable
    {
        private readonly Checkpoint _checkpoint;
        public List<(int Layer, Gemma4Router Router, Gemma4Experts Experts, Tensor Rows)> Layers { get; } = [];

        public Tiny(string dtype, Gemma4Options? options = null)
        {
            var dir = ModelDir(dtype);
            var config = Gemma4ForCausalLM.LoadConfig(dir);
            _checkpoint = Checkpoint.Open(dir);
            var weights = new CheckpointWeights(_checkpoint);
            var dt = weights.Get("model.layers.0.experts.gate_up_proj").DType;
            for (int l = 0; l < config.NumHiddenLayers; l++)
            {
                string p = $"model.layers.{l}";
                var rows = Tensor.Normal(DType.Float32, (ulong)(30 + l), 0f, 1f, 6, config.HiddenSize).To(dt);    // [6, hidden]
                Layers.Add((l, new Gemma4Router(weights, p + ".router", config),
                    new Gemma4Experts(weights, p + ".experts", config, ParallelContext.Single, options ?? new Gemma4Options()), rows));
            }
        }

        public void Dispose() => _checkpoint.Dispose();
    }

    [Theory]
    [MemberData(nameof(Dtypes))]
    public void Each_rank_of_tp2_takes_its_own_slice_of_the_stacked_experts_in_the_indexed_block(string dtype)
    {
        // The stacks are views at gateAt + start / upAt + start: rank 1's start is half the intermediate size, so a view
        // taken at gateAt - start (a mutant the CI sample found alive: no host path ran the indexed block at TP=2) reads
        // another expert's rows. Each rank's partial sum (before the all-reduce) must equal its own per-expert loop.
        var dir = ModelDir(dtype);
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        var results = ThreadWorld.Run(2, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, 2, 1);
            using var checkpoint = Checkpoint.Open(dir);
            var weights = new CheckpointWeights(checkpoint);
            var router = new Gemma4Router(weights, "model.layers.0.router", config);
            var experts = new Gemma4Experts(weights, "model.layers.0.experts", config, ctx, new Gemma4Options());
            var x = Tensor.Normal(DType.Float32, 41, 0f, 1f, 1, config.HiddenSize).To(weights.Get("model.layers.0.experts.gate_up_proj").DType);
            var (_, w, idx) = router.Forward(x);
            return experts.ForwardIndexed(x, w, idx).BitwiseEquals(experts.ForwardLoop(x, w, idx));
        }, TimeSpan.FromSeconds(60));
        Assert.True(results[0], "rank 0's indexed block differs from its loop");
        Assert.True(results[1], "rank 1's indexed block differs from its loop");
    }

    [Fact]
    public void The_indexed_block_takes_one_token_and_names_the_shapes_it_got()
    {
        using var tiny = new Tiny("fp32");
        var (_, router, experts, rows) = tiny.Layers[0];
        var two = rows.Narrow(0, 0, 2);                                                         // two tokens [2, hidden]
        var (_, w, idx) = router.Forward(two);
        var e = Assert.Throws<ArgumentException>(() => experts.ForwardIndexed(two, w, idx));
        Assert.StartsWith("the indexed experts take one token: x [1, hidden], weights and indices [1, k]; got", e.Message);
        var (_, w1, idx1) = router.Forward(rows.Narrow(0, 0, 1));
        Assert.Throws<ArgumentException>(() => experts.ForwardIndexed(rows.Narrow(0, 0, 1), w1, idx1.Narrow(1, 0, 1)));   // k of 1 against weights of k
        Assert.Throws<ArgumentException>(() => experts.ForwardIndexed(rows.Narrow(0, 0, 1).Reshape(-1), w1, idx1));      // x of rank 1
        Assert.Throws<ArgumentException>(() => experts.ForwardIndexed(two, w1, idx1));                                    // x of two rows alone
        Assert.Throws<ArgumentException>(() => experts.ForwardIndexed(rows.Narrow(0, 0, 1), w1.Unsqueeze(0), idx1.Unsqueeze(0))); // ids [1, 1, k] alone
    }

    [Theory]
    [MemberData(nameof(Dtypes))]
    public void The_indexed_experts_equal_the_per_expert_loop_bit_for_bit_for_every_token_and_layer(string dtype)
    {
        int checkedTokens = 0;
        using var tiny = new Tiny(dtype);
        foreach (var (layer, router, experts, rows) in tiny.Layers)
            for (int r = 0; r < rows.Shape[0]; r++)
            {
                var x = rows.Narrow(0, r, 1);                                                   // one decode token [1, hidden]
                var (_, w, idx) = router.Forward(x);
                var want = experts.ForwardLoop(x, w, idx);
                var got = experts.ForwardIndexed(x, w, idx);
                Assert.True(got.BitwiseEquals(want), $"{dtype} layer {layer} token {r}: the indexed experts differ from the loop (experts {string.Join(",", idx.ToInt64Array())})");
                checkedTokens++;
            }
        Assert.True(checkedTokens >= 6, "no token was compared");
    }

    [Theory]
    [MemberData(nameof(Dtypes))]
    public void The_comparison_sees_an_indexed_block_that_reads_the_next_expert(string dtype)
    {
        // The planted bug: the expert id off by one (mod E) in the indexed block only; the loop keeps the router's ids.
        using var tiny = new Tiny(dtype);
        {
            var (layer, router, experts, rows) = tiny.Layers[0];
            var x = rows.Narrow(0, 0, 1);
            var (_, w, idx) = router.Forward(x);
            var shifted = Tensor.FromArray(idx.ToInt64Array().Select(i => (i + 1) % 4).ToArray(), idx.ShapeArray);
            Assert.False(experts.ForwardIndexed(x, w, shifted).BitwiseEquals(experts.ForwardLoop(x, w, idx)),
                $"{dtype} layer {layer}: an indexed block reading the next expert passed the comparison");
        }
    }

    [Theory]
    [MemberData(nameof(Dtypes))]
    public void The_comparison_sees_an_indexed_block_that_swaps_the_gate_and_up_halves(string dtype)
    {
        // The planted bug: gate_up_proj's halves read the other way round in the indexed block (the gate-up-swapped fault)
        using var tinySwapped = new Tiny(dtype, new Gemma4Options { ExpertsGateUpSwapped = true });
        using var tiny = new Tiny(dtype);
        var swapped = tinySwapped.Layers[0];
        var (layer, router, experts, rows) = tiny.Layers[0];
        var x = rows.Narrow(0, 1, 1);
        var (_, w, idx) = router.Forward(x);
        Assert.False(swapped.Experts.ForwardIndexed(x, w, idx).BitwiseEquals(experts.ForwardLoop(x, w, idx)),
            $"{dtype} layer {layer}: an indexed block with gate and up swapped passed the comparison");
        Assert.True(swapped.Experts.ForwardIndexed(x, w, idx).BitwiseEquals(swapped.Experts.ForwardLoop(x, w, idx)),
            "the swapped option reads the halves alike on both paths");
    }

    [Fact]
    public void The_host_keeps_the_per_expert_loop_and_a_router_take_equals_index_select()
    {
        var host = Tensor.Zeros(DType.Float32, 1, 4);
        Assert.False(IndexedExperts.RoutesOnDevice(host));
        var table = Tensor.FromArray(new float[] { 0.5f, 1.5f, 2.5f, 3.5f }, 4);
        var ids = Tensor.FromArray(new long[] { 3, 0 }, 2);
        Assert.True(IndexedExperts.Take(table, ids).BitwiseEquals(table.IndexSelect(0, ids)));
        Assert.Contains("int64 ids [n]", Assert.Throws<ArgumentException>(() => IndexedExperts.Take(table, ids.To(DType.Int32))).Message);
    }

    [Fact]
    public void The_host_expert_gemv_is_a_linear_per_slot_with_one_input_row_for_every_slot_or_one_per_slot_and_names_a_bad_expert_id()
    {
        var stacked = Tensor.Normal(DType.Float32, 5, 0f, 1f, 3, 4, 8);                       // [E=3, N=4, K=8]
        var x = Tensor.Normal(DType.Float32, 6, 0f, 1f, 2, 8);                                 // [slots=2, K]
        var ids = Tensor.FromArray(new long[] { 2, 0 }, 2);
        var perSlot = IndexedExperts.Gemv(x, stacked, ids);                                    // [2, 4]
        for (int s = 0; s < 2; s++)
            Assert.True(perSlot.Narrow(0, s, 1).BitwiseEquals(new Linear(stacked.Select(0, s == 0 ? 2 : 0)).Forward(x.Narrow(0, s, 1))), $"slot {s}");
        var shared = IndexedExperts.Gemv(x.Narrow(0, 1, 1), stacked, ids);                     // one row for both slots
        Assert.True(shared.Narrow(0, 1, 1).BitwiseEquals(perSlot.Narrow(0, 1, 1)));
        Assert.True(shared.Narrow(0, 0, 1).BitwiseEquals(new Linear(stacked.Select(0, 2)).Forward(x.Narrow(0, 1, 1))));
        Assert.Equal("expert_gemv: expert id 3 (slot 1) is out of range for 3 experts",
            Assert.Throws<IndexOutOfRangeException>(() => IndexedExperts.Gemv(x, stacked, Tensor.FromArray(new long[] { 0, 3 }, 2))).Message);
        Assert.Contains("3 rows for 2 slots", Assert.Throws<ArgumentException>(() => IndexedExperts.Gemv(Tensor.Zeros(DType.Float32, 3, 8), stacked, ids)).Message);
        Assert.Contains("differ in K", Assert.Throws<ArgumentException>(() => IndexedExperts.Gemv(Tensor.Zeros(DType.Float32, 1, 7), stacked, ids)).Message);
    }

    [Fact]
    public void The_experts_are_summed_in_ascending_expert_id_with_each_add_rounded_to_bf16_not_in_slot_order()
    {
        // bf16 keeps 8 significant bits: 1 + 2^-8 rounds back to 1, 2^-8 + 2^-8 = 2^-7 is exact, 1 + 2^-7 is exact.
        // Slots hold 1 (expert 2), 2^-8 (expert 0), 2^-8 (expert 1): in expert order 2^-8 + 2^-8 + 1 = 1 + 2^-7; the planted
        // bug, slot order, gives (1 + 2^-8) + 2^-8 = 1.
        float tiny = MathF.Pow(2, -8);
        var y = Tensor.FromArray(new[] { 1f, tiny, tiny }, 3, 1).To(DType.BFloat16);
        var ids = Tensor.FromArray(new long[] { 2, 0, 1 }, 3);
        var sum = IndexedExperts.SumInIdOrder(y, ids);
        Assert.Equal(DType.BFloat16, sum.DType);
        Assert.Equal(1 + MathF.Pow(2, -7), sum.To(DType.Float32).ToFloatArray()[0]);
        var slotOrder = Tensor.Zeros(DType.BFloat16, 1, 1);
        for (int s = 0; s < 3; s++) slotOrder = Elementwise.Add(slotOrder, y.Narrow(0, s, 1));
        Assert.Equal(1f, slotOrder.To(DType.Float32).ToFloatArray()[0]);
        // equal ids (never from a top-k, but defined): the lower slot first
        Assert.Equal(1f, IndexedExperts.SumInIdOrder(y, Tensor.FromArray(new long[] { 0, 0, 0 }, 3)).To(DType.Float32).ToFloatArray()[0]);
    }
}
