using System.Diagnostics;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// One scenario run with its phases reported: "reference" (computed live or loaded from the fixtures), "engine" (the
/// engine run; the scenario compares layer by layer and token by token inside it), "compare" (the verdict and, live, the
/// drift of the recorded reference). The steps are ScenarioRunner.Run's; a scenario that cannot run at all (no
/// recording, the worker died) becomes a failed outcome with <see cref="Error"/> set instead of ending the whole run.
/// </summary>
internal sealed record ScenarioExecution(ScenarioRunner.Outcome Outcome, string? Error, TimeSpan ReferenceTime, TimeSpan EngineTime, TimeSpan CompareTime)
{
    public ScenarioResult Result => Outcome.Result;

    public string Verdict => Error is not null ? "ERROR" : Result.Passed ? "PASS" : "FAIL";

    public string Reason => Error ?? Result.Reason;

    public static ScenarioExecution Run(Scenario scenario, ScenarioContext context, Action<string>? phase = null, Action<string>? module = null)
    {
        context.ModuleProgress = module;
        var total = Stopwatch.StartNew();
        var step = Stopwatch.StartNew();
        TimeSpan tRef = default, tEngine = default;
        try
        {
            phase?.Invoke("reference");
            ReferenceBundle reference;
            try
            {
                reference = context.Reference(scenario);
            }
            catch (Exception e) when (e is FileNotFoundException or Reference.ReferenceException)
            {
                throw new InvalidOperationException($"no reference: {e.Message}", e);
            }
            if (!context.IsLive) ScenarioRunner.CheckRecordedInputs(scenario, context, reference);
            tRef = step.Elapsed;
            step.Restart();
            phase?.Invoke("engine");
            var result = scenario.RunEngine(context, reference);
            tEngine = step.Elapsed;
            step.Restart();
            context.ModuleProgress = null;
            phase?.Invoke("compare");
            var drift = context.IsLive ? ScenarioRunner.Drift(scenario, context, reference) : null;
            return new ScenarioExecution(new ScenarioRunner.Outcome(result with { Elapsed = total.Elapsed }, drift), null, tRef, tEngine, step.Elapsed);
        }
        catch (Exception e)
        {
            context.ModuleProgress = null;
            var message = e is InvalidOperationException && e.InnerException is not null ? e.Message : $"{e.GetType().Name}: {e.Message}";
            message = message.Split('\n')[0];
            var failed = new ScenarioResult(scenario, new LayerReport([]), null, $"harness error: {message}", null, total.Elapsed);
            return new ScenarioExecution(new ScenarioRunner.Outcome(failed, null), message, tRef, tEngine, step.Elapsed);
        }
    }
}
