using System.Text;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// What a scenario run found: the layer-by-layer report, the token-by-token report, and an engine failure (with the
/// module it happened in) when the engine died instead of producing output.
/// </summary>
public sealed record ScenarioResult(LlamaScenario Scenario, LayerReport Layers, TokenReport? Tokens, string? EngineError, string? FailedModule, TimeSpan Elapsed)
{
    public bool Passed => EngineError is null && Layers.Passed && Tokens is { Passed: true };

    /// <summary>The module a reader should look at first: where the engine died, or the first divergent module.</summary>
    public string? FirstBadModule => FailedModule ?? Layers.FirstDivergence?.Module;

    public string Describe()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{Scenario.Id}: {(Passed ? "PASS" : "FAIL")} ({Elapsed.TotalSeconds:F1} s)");
        if (EngineError is not null) sb.AppendLine($"engine failed in {FailedModule ?? "(unknown module)"}: {EngineError}");
        sb.AppendLine(Layers.ToString());
        if (Tokens is not null) sb.AppendLine(Tokens.ToString());
        return sb.ToString();
    }

    public override string ToString() => Describe();
}
