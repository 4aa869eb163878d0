using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>The gemma4 entries of the catalog.</summary>
public static class Gemma4Scenarios
{
    /// <summary>The first MoE layer's experts: where the experts' GELU and gate/up bugs show first.</summary>
    public const string FirstExperts = "model.layers.0.experts";

    public static IEnumerable<Scenario> All()
    {
        foreach (var shape in TinyGemma4.Shapes)
            foreach (var tp in new[] { 1, 2 })
                foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
                    yield return new Gemma4Scenario(shape, tp, dtype);
        // The text side of Gemma4ForConditionalGeneration with soft tokens from the reference's towers.
        foreach (var input in Gemma4MultimodalScenario.Inputs3)
            foreach (var tp in new[] { 1, 2 })
                yield return new Gemma4MultimodalScenario(input, tp, DType.Float32);
        yield return new Gemma4MultimodalScenario("mixed", 1, DType.BFloat16);
        // MoE-like with vision: k=v, experts, standardized vision features, image tokens attending to each other both ways.
        foreach (var tp in new[] { 1, 2 })
            yield return new Gemma4MultimodalScenario("image", tp, DType.Float32, shape: "moe");
        // Gemma3n's embedder bug in Gemma4's embedder: full-width soft tokens into a projection built input_is_parallel.
        yield return new Gemma4MultimodalScenario("image", 2, DType.Float32, Faults.RowParallelInputIsParallel, "model.embed_vision");
        // The bug as reported: exact GELU in the experts (dense MLP untouched) is caught in float32 at the first experts...
        yield return new Gemma4Scenario("moe", 1, DType.Float32, Faults.GeluTanhAsExact, FirstExperts);
        yield return new Gemma4Scenario("moe", 2, DType.Float32, Faults.GeluTanhAsExact, FirstExperts);
        // ... bf16 cannot see it (below its resolution) but still catches a real experts bug: gate/up halves swapped.
        yield return new Gemma4Scenario("moe", 1, DType.BFloat16, Faults.GateUpSwapped, FirstExperts);
        yield return new Gemma4Scenario("moe", 2, DType.BFloat16, Faults.GateUpSwapped, FirstExperts);
    }
}
