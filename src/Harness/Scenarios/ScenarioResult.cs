using System.Text;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// What a scenario run found: the layer-by-layer report, the token-by-token report (models that generate), and an
/// engine failure (with the module it happened in) when the engine died instead of producing output.
/// <see cref="ComparisonPassed"/> is whether engine and reference agree; <see cref="Passed"/> is the scenario's
/// verdict: for a mutation check (a fault), the comparison must fail at the expected module.
/// </summary>
public sealed record ScenarioResult(Scenario Scenario, LayerReport Layers, TokenReport? Tokens, string? EngineError, string? FailedModule, TimeSpan Elapsed)
{
    /// <summary>Both sides' generated tokens with their top-k, for the report's token alignment (models that generate).</summary>
    public TokenSequence? ReferenceTokens { get; init; }
    public TokenSequence? EngineTokens { get; init; }

    /// <summary>The engine's decoding teacher-forced on the reference's tokens (run when the free-running tokens diverge), or null.</summary>
    public TokenSequence? EngineForcedTokens { get; init; }

    /// <summary>What a reader should know about how the verdict was reached (e.g. which attention implementation the reference ran).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Set by models that generate tokens; false when a token comparison was expected but none ran.</summary>
    public bool TokensExpected { get; init; }

    /// <summary>
    /// Every decode step judged per module (<see cref="DecodeSteps"/>): engine and reference teacher-forced on the
    /// reference's tokens, step 1.. in order; null where the scenario judges its decode by tokens only. Beside
    /// <see cref="Layers"/> (the prefill's), whose verdict and precision budget it leaves as they were.
    /// </summary>
    public LayerReport? Steps { get; init; }

    public bool ComparisonPassed => EngineError is null && Layers.Passed && (Steps?.Passed ?? true) && (Tokens?.Passed ?? !TokensExpected);

    /// <summary>
    /// The module a reader should look at first: where the engine died, the first divergent prefill module, or the first
    /// divergent decode step's record (<c>step&lt;s&gt;.&lt;module&gt;</c>).
    /// </summary>
    public string? FirstBadModule => FailedModule ?? Layers.FirstDivergence?.Module ?? (Layers.Passed ? Steps?.FirstDivergence?.Module : null);

    public bool Passed => Scenario.ExpectFailure
        ? !ComparisonPassed && FirstBadModule == Scenario.ExpectedFirstBadModule
        : ComparisonPassed;

    /// <summary>One line: why the verdict is what it is.</summary>
    public string Reason
    {
        get
        {
            if (Scenario.ExpectFailure)
                return ComparisonPassed
                    ? $"fault '{Scenario.Fault}' was injected but the comparison passed: this check cannot fail"
                    : FirstBadModule == Scenario.ExpectedFirstBadModule
                        ? $"fault '{Scenario.Fault}' caught at {FirstBadModule}"
                        : $"fault '{Scenario.Fault}' caught at {FirstBadModule ?? "(no module)"}, expected {Scenario.ExpectedFirstBadModule}";
            if (EngineError is not null) return $"engine failed in {FailedModule ?? "(unknown module)"}: {EngineError}";
            if (!Layers.Passed)
                return Layers.Rows.Any(r => r.Failed) || Layers.Budget is null
                    ? $"first divergent module: {Layers.FirstDivergence?.Label}"
                    : Layers.Budget.ToString();
            if (Steps is { Passed: false } steps)
                return steps.Rows.Any(r => r.Failed) || steps.Budget is null
                    ? $"first divergent decode step: {steps.FirstDivergence?.Label}"
                    : $"decode steps: {steps.Budget}";
            if (Tokens is { Passed: false }) return $"tokens: {Tokens.Reason}";
            if (Tokens is null && TokensExpected) return "no token comparison ran";
            string modules = Steps is null ? "all modules within tolerance" : "all modules within tolerance, at the prefill and at every decode step";
            return Tokens is null ? modules : $"{modules}; tokens: {Tokens.Reason}";
        }
    }

    public string Describe()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{Scenario.Id}: {(Passed ? "PASS" : "FAIL")} ({Elapsed.TotalSeconds:F1} s): {Reason}");
        if (EngineError is not null) sb.AppendLine($"engine failed in {FailedModule ?? "(unknown module)"}: {EngineError}");
        foreach (var note in Notes) sb.AppendLine($"note: {note}");
        sb.AppendLine(Layers.ToString());
        if (Steps is not null) sb.AppendLine(DecodeSteps.Grid(Steps));
        if (Tokens is not null) sb.AppendLine(Tokens.ToString());
        return sb.ToString();
    }

    public override string ToString() => Describe();
}
