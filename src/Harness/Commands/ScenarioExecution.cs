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

    /// <summary>Why the scenario could not run, when it could not (the exception ScenarioRunner threw).</summary>
    public Exception? Failure { get; init; }

    /// <summary>It could not run because of a file we were given (a fixture, a model folder): exit 2's kind of failure.</summary>
    public bool IsInputError => Failure is not null && Engine.IO.InputErrors.Find(Failure) is not null;

    /// <summary>It could not run because of a bug of ours (not bad input, not the reference worker failing): exit 3's kind.</summary>
    public bool IsInternalError => Failure is not null && !IsInputError && !IsReferenceFailure(Failure);

    private static bool IsReferenceFailure(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
            if (x is Reference.ReferenceException) return true;
        return false;
    }

    /// <summary>
    /// The exit code the verbs share for a set of runs: 2 when any could not run because of bad input, else 3 when any
    /// hit an internal error (its trace printed to stderr), else 1 when any failed, else 0.
    /// </summary>
    public static int ExitCode(IReadOnlyList<ScenarioExecution> runs, bool anyOtherFailure = false)
    {
        if (runs.Any(r => r.IsInputError)) return ExitCodes.Usage;
        var internalErrors = runs.Where(r => r.IsInternalError).ToList();
        foreach (var r in internalErrors)
            Console.Error.WriteLine($"harness: internal error in {r.Result.Scenario.Id} (a bug in the harness; please report it with this trace):\n{r.Failure}");
        if (internalErrors.Count > 0) return ExitCodes.Internal;
        return runs.Any(r => !r.Result.Passed) || anyOtherFailure ? ExitCodes.Failed : ExitCodes.Ok;
    }

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
            var message = Engine.IO.InputErrors.Find(e) is { } input ? Engine.IO.InputErrors.OneLine(input)
                : e is InvalidOperationException && e.InnerException is not null ? e.Message : $"{e.GetType().Name}: {e.Message}";
            message = message.Split('\n')[0];
            var failed = new ScenarioResult(scenario, new LayerReport([]), null, $"harness error: {message}", null, total.Elapsed);
            return new ScenarioExecution(new ScenarioRunner.Outcome(failed, null), message, Time("reference"), Time("engine"), Time("compare")) { Failure = e };
        }
    }
}
