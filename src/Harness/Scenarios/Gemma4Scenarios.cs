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
        // The bug as reported: exact GELU in the experts (dense MLP untouched) is caught in float32 at the first experts...
        yield return new Gemma4Scenario("moe", 1, DType.Float32, Faults.GeluTanhAsExact, FirstExperts);
        yield return new Gemma4Scenario("moe", 2, DType.Float32, Faults.GeluTanhAsExact, FirstExperts);
        // ... bf16 cannot see it (below its resolution) but still catches a real experts bug: gate/up halves swapped.
        yield return new Gemma4Scenario("moe", 1, DType.BFloat16, Faults.GateUpSwapped, FirstExperts);
        yield return new Gemma4Scenario("moe", 2, DType.BFloat16, Faults.GateUpSwapped, FirstExperts);
    }
}
