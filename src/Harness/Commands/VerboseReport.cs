using Harness.Engine.Capture;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// The verbose output of `repro` and `compare`: the scenario, the first divergent module (both shapes and the error
/// table), the layer table, the first divergent token with both sides' top-k, the drift (live), and the exit code
/// from the comparison (0 agreed, 1 diverged).
/// </summary>
internal static class VerboseReport
{
    /// <summary>Runs the scenario with its phases printed, prints everything, returns the exit code.</summary>
    public static int RunAndPrint(Scenario scenario, ScenarioContext context)
    {
        // Bad input (the folder, config.json, the weights, a prompt the model or the machine cannot take) is one line and
        // exit 2 before anything else is printed (ScenarioRunner checks again; the checks read headers only).
        scenario.CheckInputs(context);
        var w = Console.Out;
        w.WriteLine($"scenario:    {scenario.Id}");
        w.WriteLine($"description: {scenario.Description}");
        w.WriteLine($"model {scenario.Model}, layout {scenario.Layout}, dtype {Scenario.DTypeTag(scenario.DType)}, input {scenario.Input}, tolerance {scenario.Tolerance}");
        if (scenario.Fault is { } fault)
            w.WriteLine($"fault:       {fault}: {(Faults.Known.TryGetValue(fault, out var d) ? d : "?")}" +
                        (scenario.ExpectedFirstBadModule is null ? "" : $" (expected first bad module: {scenario.ExpectedFirstBadModule})"));
        w.WriteLine(context.IsLive
            ? $"reference:   live ({context.Client!.Worker.Description})"
            : $"reference:   recorded ({Fixtures.BundlePath(context.FixturesDirectory, scenario.ReferenceKey)})");
        w.Write("phases:");
        w.Flush();
        var e = ScenarioExecution.Run(scenario, context, phase =>
        {
            w.Write($" {phase}");
            w.Flush();
        });
        w.WriteLine($" ({CliSupport.Seconds(e.Result.Elapsed)}: reference {CliSupport.Seconds(e.ReferenceTime)}, engine and comparison {CliSupport.Seconds(e.EngineTime)})");
        w.WriteLine();

        if (e.Error is not null)
        {
            Console.Error.WriteLine($"harness: {scenario.Id} could not run: {e.Error}");
            return ScenarioExecution.ExitCode([e]);
        }
        Print(e.Outcome, w);
        return e.Result.ComparisonPassed ? ExitCodes.Ok : ExitCodes.Failed;
    }

    public static void Print(ScenarioRunner.Outcome outcome, TextWriter w)
    {
        var r = outcome.Result;
        foreach (var note in r.Notes) w.WriteLine($"note:        {note}");
        if (r.Notes.Count > 0) w.WriteLine();
        if (r.EngineError is not null && r.Layers.FirstDivergence?.Module != r.FailedModule)
        {
            w.WriteLine($"== engine error ==");
            w.WriteLine($"engine failed in {r.FailedModule ?? "(unknown module)"}:");
            w.WriteLine($"  {r.EngineError}");
            w.WriteLine();
        }

        w.WriteLine("== first divergent module ==");
        if (r.Layers.FirstDivergence is { } first)
        {
            bool recorded = first.Verdict is LayerVerdict.Pass or LayerVerdict.Fail or LayerVerdict.ShapeMismatch;
            w.WriteLine($"{first.Module} (rank {first.Rank}): {Verdict(first.Verdict)}");
            w.WriteLine($"  engine shape   {(recorded && first.EngineShape is not null ? Shape.Format(first.EngineShape) : "none (the engine recorded nothing)")}");
            var expected = first.ExpectedShape ?? first.ReferenceShape;
            w.WriteLine($"  expected shape {(expected is null ? "-" : Shape.Format(expected))}" +
                        (first.ReferenceShape is null || first.Shard is null or ShardSpec.Full ? "" : $" (reference {Shape.Format(first.ReferenceShape)}, shard {first.Shard})"));
            if (r.EngineError is not null && r.FailedModule == first.Module)
                w.WriteLine($"  engine error:  {r.EngineError}");
            w.Write(first.Describe());
        }
        else if (r.FailedModule is not null)
            w.WriteLine($"{r.FailedModule}: the engine failed there (see the engine error); no recorded tensor diverged before it");
        else if (r.Steps?.FirstDivergence is { } step)
            w.WriteLine($"none at the prefill; the first divergent decode step is (step {step.Step}, {step.StepModule}, rank {step.Rank}): see == decode steps ==");
        else
            w.WriteLine(r.Tokens is { Passed: false } ? "none: every compared module is within tolerance, the tokens diverge" : "none: every compared module is within tolerance");
        w.WriteLine();

        w.WriteLine("== layers ==");
        var table = r.Layers.Rows.Count == 0 ? "no module was compared\n" : r.Layers.ToString();
        int cut = table.IndexOf("\nfirst divergence: ", StringComparison.Ordinal);
        w.Write(cut >= 0 ? table[..(cut + 1)] : table);
        w.WriteLine();

        if (r.Steps is { } steps)
        {
            w.WriteLine("== decode steps ==");
            w.Write(DecodeSteps.Grid(steps));
            w.WriteLine();
        }

        w.WriteLine("== tokens ==");
        if (r.Tokens is not null) w.Write(r.Tokens.ToString());
        else w.WriteLine(r.TokensExpected ? "no token comparison ran (the engine did not generate)" : "not compared: this scenario does not generate tokens");
        w.WriteLine();

        if (outcome.Drift is { } drift)
        {
            w.WriteLine("== drift ==");
            w.WriteLine(drift.ToString());
            w.WriteLine();
        }

        w.WriteLine(r.ComparisonPassed
            ? "comparison: PASS (engine and reference agree)"
            : $"comparison: DIVERGED: {ComparisonReason(r)}");
        if (r.Scenario.ExpectFailure && r.Scenario.ExpectedFirstBadModule is not null)
            w.WriteLine($"mutation check: {(r.Passed ? "PASS" : "FAIL")}: {r.Reason}");
        else if (r.Scenario.Fault is not null)                                 // planted ad hoc (repro/compare --fault): where it showed
            w.WriteLine(r.ComparisonPassed
                ? $"fault '{r.Scenario.Fault}' was injected but nothing diverged"
                : $"fault '{r.Scenario.Fault}' caught at {r.FirstBadModule ?? "(tokens)"}");
    }

    /// <summary>Why the comparison itself failed (not the mutation-check verdict).</summary>
    public static string ComparisonReason(ScenarioResult r)
    {
        if (r.EngineError is not null) return $"engine failed in {r.FailedModule ?? "(unknown module)"}: {r.EngineError}";
        if (r.Layers.FirstDivergence is { } first) return $"first divergent module: {first.Label} ({Verdict(first.Verdict)})";
        if (r.Steps?.FirstDivergence is { } step)
            return $"first divergent decode step: (step {step.Step}, {step.StepModule}, rank {step.Rank}): {step.Label} ({Verdict(step.Verdict)})";
        if (r.Tokens is { Passed: false } t) return $"tokens: {t.Reason}";
        if (r.Tokens is null && r.TokensExpected) return "no token comparison ran";
        return "-";
    }

    private static string Verdict(LayerVerdict v) => v switch
    {
        LayerVerdict.ShapeMismatch => "SHAPE MISMATCH",
        LayerVerdict.InvalidShard => "INVALID SHARD",
        _ => v.ToString().ToUpperInvariant(),
    };
}
