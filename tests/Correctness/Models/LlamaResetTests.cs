using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Llama;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// LlamaForCausalLM.Reset: the bench and the graph decoder reuse one model (its weights and fused copies uploaded once)
/// for several sequences; a reset model must decode exactly as a fresh one.
/// </summary>
public class LlamaResetTests
{
    [Fact]
    public void A_reset_model_decodes_as_a_fresh_one()
    {
        var dir = Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");
        var config = HfConfig.Load(Path.Combine(dir, "config.json")).Text;
        using var checkpoint = Checkpoint.Open(dir);
        var weights = new CheckpointWeights(checkpoint);
        var prompt = Tensor.FromArray(new long[] { 1, 17, 42, 99, 5 }, 5);
        var fresh = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 32).Generate(prompt, 6, 3);
        var reused = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 32);
        reused.Generate(Tensor.FromArray(new long[] { 3, 8, 2 }, 3), 9, 3);  // another sequence first
        reused.Reset();
        Assert.Equal(0, reused.Position);
        var again = reused.Generate(prompt, 6, 3);
        Assert.Equal(fresh.Tokens, again.Tokens);
        Assert.Equal(fresh.TopKLogprobs.Cast<float>(), again.TopKLogprobs.Cast<float>());
    }
}
