using System.Diagnostics;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// One scenario run through <see cref="ScenarioRunner.Run"/> with its phases reported and timed: "reference" (computed
/// live or loaded from the fixtures), "engine" (the engine run; the scenario compares layer by layer and token by token
/// inside it), "compare" (the verdict and, live, the drift of the recorded reference). A scenario that cannot run at all (no
/// recording, the worker died) becomes a failed outcome with <see cref="Error"/> set instead of ending the whole run.
/// </summary>
internal sealed record ScenarioExecution(ScenarioRunner.Outcome Outcome, string? Error, TimeSpan ReferenceTime, TimeSpan EngineTime, TimeSpan CompareTime)
{
    public ScenarioResult Result => Outcome.Result;

    public string Verdict => Error is not null ? "ERROR" : Result.Passed ? "PASS" : "FAIL";

    public string Reason => Error ?? Result.Reason;

    public static ScenarioExecution Run(Scenario scenario, ScenarioContext context, Action<string>? phase = null, Action<string>? module = null)
    {
        var total = Stopwatch.StartNew();
        var step = Stopwatch.StartNew();
        var times = new Dictionary<string, TimeSpan>();
        string? current = null;
        void Close()
        {
            if (current is not null) times[current] = step.Elapsed;
            step.Restart();
        }
        void Enter(string next)
        {
            Close();
            current = next;
            context.ModuleProgress = next == "engine" ? module : null;
            phase?.Invoke(next);
        }
        TimeSpan Time(string name) => times.GetValueOrDefault(name);
        try
        {
            var outcome = ScenarioRunner.Run(scenario, context, Enter);
            Close();
            context.ModuleProgress = null;
            return new ScenarioExecution(outcome, null, Time("reference"), Time("engine"), Time("compare"));
        }
        catch (Exception e)
        {
            Close();
            context.ModuleProgress = null;
            var message = e is InvalidOperationException && e.InnerException is not null ? e.Message : $"{e.GetType().Name}: {e.Message}";
            message = message.Split('\n')[0];
            var failed = new ScenarioResult(scenario, new LayerReport([]), null, $"harness error: {message}", null, total.Elapsed);
            return new ScenarioExecution(new ScenarioRunner.Outcome(failed, null), message, Time("reference"), Time("engine"), Time("compare"));
        }
    }
}
