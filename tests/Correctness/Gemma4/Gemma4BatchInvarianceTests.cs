using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Gemma4;

/// <summary>
/// Batch-invariant mode end to end on Gemma4's text decoder (the recorded tiny models, both shapes, fp32 and bf16): a
/// prompt's logits (its prefill and one decode step) have the same bits run alone or batched with 2 or 7 other prompts
/// of other lengths (batch 1, 3, 8), at 1 and 2 threads. A batch stacks the sequences' rows for every row-wise op
/// (embeddings, norms, linears, MLP, router, experts, lm_head: batch-invariant GEMMs and reductions) and runs attention
/// per sequence; the MoE experts see a different number of rows per expert in each batch.
/// </summary>
public class Gemma4BatchInvarianceTests
{
    private static readonly long[] Probe = [17, 250, 33, 9, 101, 64];

    private static Tensor Prompt(int i, int vocab)
    {
        var rng = new SplitMix64(500 + (ulong)i);
        int len = 3 + i % 5;
        return Tensor.FromArray(Enumerable.Range(0, len).Select(_ => (long)(6 + rng.NextInt(vocab - 6))).ToArray(), len);
    }

    // Prefill then one decode step of the probe at slot `slot` of a batch of `batch`; returns the probe's two logits.
    private static (Tensor Prefill, Tensor Decode) Run(Gemma4ForCausalLM model, int batch, int slot)
    {
        var prompts = Enumerable.Range(0, batch).Select(i => i == slot ? Tensor.FromArray(Probe, Probe.Length) : Prompt(i, model.Config.VocabSize)).ToList();
        var seqs = prompts.Select(_ => model.NewSequence()).ToList();
        var prefill = model.Forward(seqs, prompts);
        var next = Enumerable.Range(0, batch).Select(i => Tensor.FromArray([i == slot ? 7L : 8L + i], 1)).ToList();
        var decode = model.Forward(seqs, next);
        return (prefill[slot].Clone(), decode[slot].Clone());
    }

    [Theory]
    [InlineData("moe", "fp32")]
    [InlineData("moe", "bf16")]
    [InlineData("e2b-like", "fp32")]
    [InlineData("e2b-like", "bf16")]
    public void A_prompts_logits_are_bitwise_equal_alone_and_in_batches_of_3_and_8_at_1_and_2_threads(string shape, string dtype)
    {
        var dir = Path.Combine(Fixtures.DefaultDirectory(), "models", $"{TinyGemma4.ModelName(shape)}-{dtype}");
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        using var checkpoint = Checkpoint.Open(dir);
        var model = new Gemma4ForCausalLM(new CheckpointWeights(checkpoint), config, ParallelContext.Single);
        using var invariant = ComputeSettings.UseBatchInvariant();
        (Tensor Prefill, Tensor Decode) alone;
        using (ComputeSettings.UseThreads(1)) alone = Run(model, 1, 0);
        foreach (var threads in new[] { 1, 2 })
            using (ComputeSettings.UseThreads(threads))
                foreach (var (batch, slot) in new[] { (1, 0), (3, 1), (8, 5), (8, 7) })
                {
                    var got = Run(model, batch, slot);
                    Assert.True(got.Prefill.BitwiseEquals(alone.Prefill), $"{shape} {dtype}: prefill logits differ at batch {batch}, slot {slot}, {threads} threads");
                    Assert.True(got.Decode.BitwiseEquals(alone.Decode), $"{shape} {dtype}: decode logits differ at batch {batch}, slot {slot}, {threads} threads");
                }
    }

    [Fact]
    public void Batched_greedy_decoding_gives_each_prompt_its_own_tokens()
    {
        var dir = Path.Combine(Fixtures.DefaultDirectory(), "models", $"{TinyGemma4.ModelName("e2b-like")}-fp32");
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        using var checkpoint = Checkpoint.Open(dir);
        var model = new Gemma4ForCausalLM(new CheckpointWeights(checkpoint), config, ParallelContext.Single);
        using var invariant = ComputeSettings.UseBatchInvariant();
        var prompts = Enumerable.Range(0, 3).Select(i => Prompt(i, config.VocabSize)).ToList();
        var together = model.Generate(prompts, 4, 3);
        for (int i = 0; i < prompts.Count; i++)
            Assert.Equal(model.Generate(prompts[i], 4, 3).Tokens, together[i].Tokens);
    }
}
