using System.Globalization;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Reports;

/// <summary>
/// One scenario in the report. The descriptive fields (model, layout, dtype, input, fault) are plain strings so that
/// any catalog entry can produce them. ExpectFailure marks a mutation check: the comparison must fail, and a failure
/// is then the scenario's PASS ("failed as expected"). Passed is the scenario's verdict under that rule; Reason says
/// why in one line. Tokens is null when the engine produced no tokens.
/// </summary>
public sealed record ScenarioRecord(
    string Id,
    string Model,
    string Layout,
    string Dtype,
    string Input,
    string? Fault,
    bool ExpectFailure,
    bool Passed,
    string Reason,
    double ElapsedSeconds,
    string? EngineError,
    string? FirstBadModule,
    IReadOnlyList<ModuleRecord> Modules,
    TokenRecord? Tokens)
{
    /// <summary>
    /// The first divergent decode step judged per module, (step, module, rank); null when every step passed or the
    /// scenario judges its decode by tokens only (<see cref="StepsJudged"/>).
    /// </summary>
    public StepDivergence? FirstDivergentStep { get; init; }

    /// <summary>Whether the scenario judged every decode step per module (its <see cref="Modules"/> then hold step rows, Step &gt; 0).</summary>
    public bool StepsJudged { get; init; }

    /// <summary>"pass" or "fail".</summary>
    public string Verdict => Passed ? "pass" : "fail";

    /// <summary>Whether the comparison itself failed (before <see cref="ExpectFailure"/> is applied).</summary>
    public bool ComparisonFailed => EngineError is not null || Modules.Any(m => m.Failed) || Tokens is not { Passed: true };

    /// <summary>The largest finite relative L2 error over the compared modules; null when no module has one.</summary>
    public double? MaxRelL2
    {
        get
        {
            double? max = null;
            foreach (var m in Modules)
                if (m.RelL2 is double v && double.IsFinite(v) && (max is null || v > max)) max = v;
            return max;
        }
    }

    /// <summary>
    /// The report's record of a scenario run. The sequences, when the caller has them, give the token alignment every
    /// step; without them only the matched prefix length and the divergent step are known.
    /// </summary>
    public static ScenarioRecord From(ScenarioResult result, string model, string layout, string dtype, string input, string? fault,
        bool expectFailure, TokenSequence? referenceTokens = null, TokenSequence? engineTokens = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        // A mutation check passes only when the comparison fails at its expected module (ScenarioResult.Passed).
        bool passed = expectFailure == result.Scenario.ExpectFailure ? result.Passed : result.ComparisonPassed != expectFailure;
        var modules = result.Layers.Rows.Concat(result.Steps?.Rows ?? []).Select(ModuleRecord.From).ToArray();
        var tokens = result.Tokens is null ? null
            : TokenRecord.From(result.Tokens, referenceTokens ?? result.ReferenceTokens, engineTokens ?? result.EngineTokens);
        return new ScenarioRecord(result.Scenario.Id, model, layout, dtype, input, fault, expectFailure, passed,
            ReasonFor(result, expectFailure, fault), result.Elapsed.TotalSeconds,
            result.EngineError is null ? null : TokenRecord.OneLine(result.EngineError), result.FirstBadModule, modules, tokens)
        {
            StepsJudged = result.Steps is not null,
            FirstDivergentStep = result.Steps?.FirstDivergence is { } d ? new StepDivergence(d.Step, d.StepModule, d.Rank) : null,
        };
    }

    /// <summary>The record of a catalog scenario's result, its descriptive fields taken from the scenario.</summary>
    public static ScenarioRecord From(ScenarioResult result)
    {
        var s = result.Scenario;
        return From(result, s.Model, s.Layout, Scenario.DTypeTag(s.DType), s.Input, s.Fault, s.ExpectFailure);
    }

    private static string ReasonFor(ScenarioResult result, bool expectFailure, string? fault)
    {
        string cause = Cause(result);
        if (expectFailure && result.Scenario.ExpectFailure && !result.ComparisonPassed && !result.Passed)
            return $"failed, but not where expected: {result.Reason}";
        if (expectFailure)
            return result.ComparisonPassed
                ? $"expected the comparison to fail{(fault is null ? "" : $" under fault {fault}")}, but it passed: the check cannot catch this fault"
                : $"failed as expected: {cause}";
        return cause;
    }

    /// <summary>What the comparison found, in one line: the engine failure, the first bad module, or the token verdict.</summary>
    private static string Cause(ScenarioResult result)
    {
        var ci = CultureInfo.InvariantCulture;
        if (result.EngineError is not null)
            return TokenRecord.OneLine($"engine failed in {result.FailedModule ?? "(unknown module)"}: {result.EngineError}");
        if (result.Layers.FirstDivergence is { } row)
        {
            string detail = row.Verdict switch
            {
                LayerVerdict.Fail when row.Result is { } r => string.Create(ci,
                    $"{r.Mismatches} of {r.Total} elements outside {row.Policy}, rel L2 {r.RelativeL2:0.00E+00}, max abs {r.MaxAbsError:0.00E+00}"),
                _ => row.Note.Length > 0 ? row.Note : ModuleRecord.VerdictOf(row.Verdict),
            };
            return TokenRecord.OneLine($"{row.Label}: {ModuleRecord.VerdictOf(row.Verdict)}: {detail}");
        }
        if (result.Steps?.FirstDivergence is { } step)
        {
            string where = string.Create(ci, $"first divergent decode step (step {step.Step}, {step.StepModule}, rank {step.Rank}): {ModuleRecord.VerdictOf(step.Verdict)}");
            return TokenRecord.OneLine(step.Result?.Oracle is { } so
                ? where + string.Create(ci, $": engine rel L2 against float64 {so.EngineRelativeL2:0.00E+00}, the reference's own {so.ReferenceRelativeL2:0.00E+00}, margin {so.Margin:G3}")
                : where);
        }
        if (result.Tokens is null) return "the engine produced no tokens";
        if (!result.Tokens.Passed) return TokenRecord.OneLine($"tokens: {result.Tokens.Reason}");
        int compared = result.Layers.Rows.Count(r => r.Verdict == LayerVerdict.Pass);
        return TokenRecord.OneLine(string.Create(ci, $"{compared} module records within tolerance; tokens {TokenVerdictName(result.Tokens)}: {result.Tokens.Reason}"));
    }

    private static string TokenVerdictName(TokenReport t) =>
        t.Verdict == TokenVerdict.Identical ? TokenRecord.Identical : TokenRecord.AcceptedDivergence;
}

/// <summary>Where decode first diverged, judged per module: the decode step (1 = the forward after the prompt's), the module, the rank.</summary>
public sealed record StepDivergence(int Step, string Module, int Rank);
