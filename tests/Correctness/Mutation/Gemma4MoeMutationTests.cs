using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma4's MoE experts on the recorded tiny MoE checkpoint (fixtures/models/tiny-gemma4-moe-fp32): the checks the
/// offline catalog cannot make, each a Stryker.NET mutant of src/Engine/Models/Gemma4/Gemma4Moe.cs that survived the
/// catalog (notes/issue-21-mutation.md), written as the bug report it guards.
/// </summary>
public class Gemma4MoeMutationTests
{
    private const string Prefix = "model.layers.0.experts";

    private static string ModelDir => Path.Combine(Fixtures.DefaultDirectory(), "models", TinyGemma4.ModelName("moe") + "-fp32");

    /// <summary>The checkpoint with one tensor replaced.</summary>
    private sealed class Replaced(IWeightSource inner, string name, Func<Tensor, Tensor> replace) : IWeightSource
    {
        public bool Contains(string n) => inner.Contains(n);
        public Tensor Get(string n) => n == name ? replace(inner.Get(n)) : inner.Get(n);
    }

    [Fact]
    public void A_gate_up_proj_or_down_proj_of_the_wrong_shape_is_refused_naming_the_tensor_and_the_expected_shape()
    {
        // mutants: either shape check's throw removed or its message emptied, "2 * inter" in the message as "2 / inter"
        var config = Gemma4ForCausalLM.LoadConfig(ModelDir);
        using var checkpoint = Checkpoint.Open(ModelDir);
        var weights = new CheckpointWeights(checkpoint);
        var gateUp = new Replaced(weights, Prefix + ".gate_up_proj", t => t.Narrow(1, 0, 60).Contiguous());   // [4, 60, 64]
        var ex = Assert.Throws<ArgumentException>(() => new Gemma4Experts(gateUp, Prefix, config, ParallelContext.Single, new Gemma4Options()));
        Assert.Equal($"{Prefix}.gate_up_proj is [4, 60, 64], expected [4, 64, 64] (num_experts, 2 * moe_intermediate_size, hidden_size)", ex.Message);
        var down = new Replaced(weights, Prefix + ".down_proj", t => t.Narrow(2, 0, 30).Contiguous());         // [4, 64, 30]
        ex = Assert.Throws<ArgumentException>(() => new Gemma4Experts(down, Prefix, config, ParallelContext.Single, new Gemma4Options()));
        Assert.Equal($"{Prefix}.down_proj is [4, 64, 30], expected [4, 64, 32]", ex.Message);
    }

    [Fact]
    public void An_activation_that_is_not_gated_is_refused_for_the_fused_gate_up_experts()
    {
        // mutants: the throw removed (a *_no_mul activation applied to the gate half only, the up half ignored) or its
        // message emptied
        var config = Gemma4ForCausalLM.LoadConfig(ModelDir);
        using var checkpoint = Checkpoint.Open(ModelDir);
        var ex = Assert.Throws<ArgumentException>(() => new Gemma4Experts(new CheckpointWeights(checkpoint), Prefix, config,
            ParallelContext.Single, new Gemma4Options { ExpertsActivation = "silu_no_mul" }));
        Assert.Equal($"{Prefix}: Gemma4's experts are gated (gate_up_proj); activation 'silu_no_mul' is not", ex.Message);
    }

    [Fact]
    public void The_gate_up_swapped_fault_reads_the_up_half_as_gate_and_the_gate_half_as_up_not_one_half_twice()
    {
        // The catalog's fault=gate-up-swapped scenarios only check that the fault is caught at the experts; reading one
        // half twice is caught there as well. Mutants: gateAt or upAt taken as if the option were off.
        var config = Gemma4ForCausalLM.LoadConfig(ModelDir);
        using var checkpoint = Checkpoint.Open(ModelDir);
        var weights = new CheckpointWeights(checkpoint);
        int inter = config.MoeIntermediateSize;
        var swappedCheckpoint = new Replaced(weights, Prefix + ".gate_up_proj",
            t => Tensor.Cat([t.Narrow(1, inter, inter), t.Narrow(1, 0, inter)], 1));                    // [E, up | gate, D]
        var faulty = new Gemma4Experts(weights, Prefix, config, ParallelContext.Single, new Gemma4Options { ExpertsGateUpSwapped = true });
        var plainOnSwapped = new Gemma4Experts(swappedCheckpoint, Prefix, config, ParallelContext.Single, new Gemma4Options());
        var plain = new Gemma4Experts(weights, Prefix, config, ParallelContext.Single, new Gemma4Options());

        var rng = new Random(21);
        var x = Tensor.FromArray(Enumerable.Range(0, 5 * config.HiddenSize).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), 5, config.HiddenSize);
        var w = Tensor.FromArray(new float[] { 0.7f, 0.3f, 0.6f, 0.4f, 0.9f, 0.1f, 0.5f, 0.5f, 0.2f, 0.8f }, 5, 2);
        var idx = Tensor.FromArray(new long[] { 0, 1, 1, 2, 2, 3, 3, 0, 0, 2 }, 5, 2);                   // every expert hit
        var got = faulty.Forward(x, w, idx);
        Assert.True(got.BitwiseEquals(plainOnSwapped.Forward(x, w, idx)), "the fault is not the checkpoint with its halves swapped");
        Assert.False(got.BitwiseEquals(plain.Forward(x, w, idx)), "the fault changed nothing");
    }

    [Fact]
    public void A_moe_intermediate_size_that_tensor_parallelism_cannot_split_is_refused_naming_the_field()
    {
        // mutant: the name given to Sharding.Range emptied (the error then said only "size 31 is not divisible by the
        // tensor-parallel size 2", naming no field)
        var config = Gemma4ForCausalLM.LoadConfig(ModelDir) with { MoeIntermediateSize = 31 };
        using var checkpoint = Checkpoint.Open(ModelDir);
        IWeightSource weights = new Replaced(new CheckpointWeights(checkpoint), Prefix + ".gate_up_proj", t => t.Narrow(1, 0, 62).Contiguous());
        weights = new Replaced(weights, Prefix + ".down_proj", t => t.Narrow(2, 0, 31).Contiguous());   // [4, 62, 64], [4, 64, 31]
        var ex = Assert.ThrowsAny<Exception>(() => ThreadWorld.Run(2, rank =>
            _ = new Gemma4Experts(weights, Prefix, config, ThreadWorld.Layout(rank, 2, 1), new Gemma4Options()), TimeSpan.FromSeconds(30)));
        Assert.Contains($"{Prefix} moe_intermediate_size: size 31 is not divisible by the tensor-parallel size 2", ex.ToString());
    }
}
