using System.CommandLine;
using System.Diagnostics;
using Harness.Scenarios;
using Spectre.Console;

namespace Harness.Commands;

/// <summary>
/// `harness run [filter] [--offline] [--report DIR] [--baseline FILE] [--growth-factor X] [--fail-fast]`: runs catalog
/// scenarios with live progress (Spectre.Console on a terminal; one plain line per scenario when redirected or CI=true),
/// then a summary table. Exit 0 when every scenario passed, 1 when any failed, 2 on usage errors.
/// </summary>
internal static class RunCommand
{
    public sealed record Options(string[] Filters, bool Offline, string? Report, string? Baseline, double GrowthFactor, bool FailFast, string? Fault = null,
        string Device = "cpu", bool ConfigMutations = false);

    public static Command Create()
    {
        var filter = new Argument<string[]>("filter")
        {
            Description = "Which scenarios: each filter is comma-separated terms that must all match the id (substring, or glob with '*'; " +
                          "'!' negates); several filters add up. None: all.",
            Arity = ArgumentArity.ZeroOrMore,
        };
        filter.Validators.Add(r =>
        {   // an empty filter (a shell variable that expanded to '') would select every scenario: say so instead of running them all
            if (r.GetValueOrDefault<string[]>() is { } terms && terms.Any(string.IsNullOrWhiteSpace))
                r.AddError("run: a filter is empty; give a term (e.g. llama/tp2), or no filter to run every scenario");
        });
        var fault = new Option<string?>("--fault")
        {
            Description = "Inject this engine fault into every selected scenario that has none, to see which scenarios catch it " +
                          "(they then fail: the comparison diverges). See `harness repro --help` for the known faults.",
            HelpName = "NAME",
        };
        fault.Validators.Add(r =>
        {
            var name = r.GetValueOrDefault<string?>();
            if (name is not null && !Engine.Runtime.Faults.Known.ContainsKey(name))
                r.AddError($"--fault: unknown fault '{name}'; known: {string.Join(", ", Engine.Runtime.Faults.Known.Keys.Order())}");
        });
        var device = new Option<string>("--device")
        {
            Description = "Where the engine runs: cpu (default) or cuda (the GPU; ids get a /cuda part; scenarios without a GPU path are listed and skipped).",
            DefaultValueFactory = _ => "cpu",
            HelpName = "cpu|cuda",
        };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var offline = new Option<bool>("--offline")
        {
            Description = "Compare against the recorded reference in fixtures/ (no Python needed) instead of the live HF reference.",
        };
        var report = new Option<string?>("--report") { Description = "Write the accuracy report (report.json) into this folder.", HelpName = "DIR" };
        var baseline = new Option<string?>("--baseline")
        {
            Description = "An earlier report.json to compare errors with (needs --report).",
            HelpName = "FILE",
        };
        baseline.Validators.Add(r =>
        {
            var path = r.GetValueOrDefault<string?>();
            if (path is not null && !File.Exists(path)) r.AddError($"--baseline: no such file: {Path.GetFullPath(path)}");
        });
        var growth = CliInputs.GrowthFactor("With --baseline: how much a scenario's error may grow over the baseline before the report flags it.");
        var failFast = new Option<bool>("--fail-fast") { Description = "Stop at the first scenario that fails; the rest are reported as not run." };
        var configMutations = new Option<bool>("--config-mutations")
        {
            Description = "Instead of the comparison: prove every config.json field the engine reads is observable. Each field is given to the " +
                          "engine at HF's default (or perturbed where the true value is the default) while the reference keeps the true " +
                          "config; some selected scenario must fail. Prints field, value used, the scenario and module that caught it, or MISSED; " +
                          "exit 1 when any field is missed, on a default or absent. Needs the live reference.",
        };

        var command = new Command("run",
            "Run catalog scenarios (engine vs reference, layer by layer and token by token) with live progress and a summary table. " +
            "Live by default: needs the reference interpreter (HARNESS_PYTHON or ci/reference-env.sh). " +
            "A scenario with a fault is a mutation check: it passes when the comparison fails at the expected module. " +
            "Exit codes: 0 every scenario passed, 1 any failed, 2 usage error (or no interpreter for a live run).")
        {
            filter, offline, report, baseline, growth, failFast, fault, device, configMutations,
        };
        command.Validators.Add(r =>
        {
            if (r.GetValue(baseline) is not null && r.GetValue(report) is null) r.AddError("--baseline needs --report DIR");
        });
        command.SetAction(r => Run(new Options(r.GetValue(filter) ?? [], r.GetValue(offline), r.GetValue(report), r.GetValue(baseline), r.GetValue(growth), r.GetValue(failFast), r.GetValue(fault), r.GetValue(device) ?? "cpu", r.GetValue(configMutations))));
        return command;
    }

    private static int RunConfigMutations(IReadOnlyList<Scenario> scenarios, ScenarioContext context)
    {
        Console.WriteLine($"config-field mutations over {scenarios.Count(s => s.Fault is null)} scenario(s) without a fault");
        var sw = Stopwatch.StartNew();
        var rows = ConfigMutations.Run(scenarios, context, CliSupport.PlainOutput ? null : line => Console.Error.Write($"\r{line,-150}"));
        if (!CliSupport.PlainOutput) Console.Error.Write($"\r{new string(' ', 150)}\r");
        Console.Write(ConfigMutations.Format(rows));
        Console.WriteLine($"in {CliSupport.Seconds(sw.Elapsed)}");
        return rows.Any(r => r.Missed) ? ExitCodes.Failed : ExitCodes.Ok;
    }

    public static int Run(Options o)
    {
        var selected = (o.Filters.Length == 0 ? ScenarioCatalog.All : o.Filters.SelectMany(ScenarioCatalog.Filter)).ToHashSet();
        IReadOnlyList<Scenario> scenarios = ScenarioCatalog.All.Where(selected.Contains).ToList();
        if (scenarios.Count == 0)
        {
            var text = string.Join(" ", o.Filters);
            Console.Error.WriteLine($"harness run: no scenario matches '{text}'");
            CliSupport.PrintNearMatches(o.Filters.FirstOrDefault() ?? "", Console.Error);
            return ExitCodes.Usage;
        }
        if (o.Device != "cpu")
        {
            var onDevice = scenarios.Select(s => (s, d: CudaScenarios.OnDevice(s, o.Device))).ToList();
            foreach (var (s, _) in onDevice.Where(x => x.d is null))
                Console.WriteLine($"skipped on {o.Device}: {s.Id} (no GPU path for {s.Model} scenarios yet)");
            scenarios = onDevice.Where(x => x.d is not null).Select(x => x.d!).ToList();
            if (scenarios.Count == 0)
            {
                Console.Error.WriteLine($"harness run: none of the selected scenarios runs on {o.Device}");
                return ExitCodes.Usage;
            }
            if (!Engine.Cuda.CudaDevice.TryGet(out var gpu, out var why))
            {
                Console.Error.WriteLine($"harness run --device {o.Device}: no usable GPU: {why}");
                return ExitCodes.Failed;
            }
            Console.WriteLine($"engine on {Bench.GpuSelfCheck.Describe(gpu!)}");
        }
        // A bad baseline or an unwritable report folder is bad input: say so now (exit 2), not after the whole run.
        if (o.Baseline is not null) _ = Reports.AccuracyReport.Load(o.Baseline);
        if (o.Report is not null) CliInputs.OutputFolder(o.Report, "--report");
        if (o.Fault is not null)
            scenarios = scenarios.Select(s => s.Fault is not null ? s
                : s with { Fault = o.Fault, ExpectedFirstBadModule = null, Id = Scenario.WithFault(s.Id, o.Fault) }).ToList();
        if (o.ConfigMutations && o.Offline)
        {
            Console.Error.WriteLine("harness run: --config-mutations needs the live reference (HF's config defaults come from it), not --offline");
            return ExitCodes.Usage;
        }
        var context = o.Offline ? ScenarioContext.Recorded() : CliSupport.LiveContext("run", o.Device);   // the reference on the GPU too (HARNESS_REFERENCE_DEVICE overrides)
        if (context is null) return ExitCodes.Usage;
        if (o.ConfigMutations) return RunConfigMutations(scenarios, context);

        var mode = context.IsLive ? $"live reference ({context.Client!.Worker.Description})" : $"recorded reference in {context.FixturesDirectory}";
        Console.WriteLine($"running {scenarios.Count} scenario{(scenarios.Count == 1 ? "" : "s")} against the {mode}");

        var total = Stopwatch.StartNew();
        var done = CliSupport.PlainOutput ? RunPlain(scenarios, context, o.FailFast) : RunLive(scenarios, context, o.FailFast);
        total.Stop();

        PrintSummary(scenarios, done);
        int passed = done.Count(e => e.Result.Passed), failed = done.Count - passed, errors = done.Count(e => e.Error is not null);
        int notRun = scenarios.Count - done.Count;
        Console.WriteLine($"{passed} passed, {failed} failed{(errors > 0 ? $" ({errors} could not run)" : "")}" +
                          $"{(notRun > 0 ? $", {notRun} not run (--fail-fast)" : "")} in {CliSupport.Seconds(total.Elapsed)}");
        var drifted = done.Where(e => e.Outcome.Drift is { Drifted: true }).ToList();
        if (drifted.Count > 0)
            Console.WriteLine($"{drifted.Count} recorded reference{(drifted.Count == 1 ? "" : "s")} drifted from the live one: re-record with `harness fixtures record` once understood");

        int regressions = 0;
        if (o.Report is not null)
        {
            try
            {
                var written = RunReportHook.Write(done.Select(e => e.Outcome).ToList(), o.Report, o.Baseline, o.GrowthFactor, context);
                Console.WriteLine($"report written to {Path.GetFullPath(o.Report)}");
                if (written.Baseline is { } b)
                {
                    regressions = b.RegressionCount;
                    Console.WriteLine($"against the baseline {Path.GetFullPath(o.Baseline!)}: {regressions} regression{(regressions == 1 ? "" : "s")} (growth factor {o.GrowthFactor})");
                    foreach (var r in b.Regressions) Console.WriteLine($"  REGRESSION {r.Id}: {r.Reason}");
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"harness run: cannot write the report into {Path.GetFullPath(o.Report)}: {e.Message}");
                return ExitCodes.Usage;
            }
        }
        // A nightly goes red on a regression against the baseline too, not only on a failed scenario.
        return ScenarioExecution.ExitCode(done, anyOtherFailure: notRun > 0 || regressions > 0);
    }

    /// <summary>One line per scenario, written as its phases go: "[ 3/29] id: reference engine compare -> PASS (1.2 s)".</summary>
    private static List<ScenarioExecution> RunPlain(IReadOnlyList<Scenario> scenarios, ScenarioContext context, bool failFast)
    {
        var done = new List<ScenarioExecution>();
        int width = scenarios.Count.ToString(System.Globalization.CultureInfo.InvariantCulture).Length;
        for (int i = 0; i < scenarios.Count; i++)
        {
            var s = scenarios[i];
            Console.Write($"[{(i + 1).ToString().PadLeft(width)}/{scenarios.Count}] {s.Id}:");
            Console.Out.Flush();
            var e = ScenarioExecution.Run(s, context, phase =>
            {
                Console.Write($" {phase}");
                Console.Out.Flush();
            });
            Console.WriteLine($" -> {e.Verdict} ({CliSupport.Seconds(e.Result.Elapsed)})");
            if (!e.Result.Passed) Console.WriteLine($"    {e.Reason}");
            foreach (var note in e.Result.Notes) Console.WriteLine($"    note: {note}");
            if (e.Outcome.Drift is { } drift) Console.WriteLine($"    {drift}");
            done.Add(e);
            if (failFast && !e.Result.Passed) break;
        }
        return done;
    }

    /// <summary>
    /// Spectre.Console progress: overall bar, the current scenario with its phase (and, in the engine phase, the module
    /// it just recorded) and elapsed time, a line per finished scenario.
    /// </summary>
    private static List<ScenarioExecution> RunLive(IReadOnlyList<Scenario> scenarios, ScenarioContext context, bool failFast)
    {
        var done = new List<ScenarioExecution>();
        string[] phases = ["reference", "engine", "compare"];
        AnsiConsole.Progress()
            .AutoClear(true)
            .HideCompleted(true)
            .Columns(new SpinnerColumn(), new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var overall = ctx.AddTask($"scenarios 0/{scenarios.Count}", maxValue: scenarios.Count);
                for (int i = 0; i < scenarios.Count; i++)
                {
                    var s = scenarios[i];
                    var id = Markup.Escape(s.Id);
                    var task = ctx.AddTask(id, maxValue: phases.Length);
                    var e = ScenarioExecution.Run(s, context, phase =>
                    {
                        task.Value = Array.IndexOf(phases, phase);
                        task.Description = $"{id} [yellow]{phase}[/]";
                    }, module => task.Description = $"{id} [yellow]engine[/] [grey]{Markup.Escape(CliInputs.Escape(module))}[/]");
                    task.Value = task.MaxValue;
                    task.StopTask();
                    var color = e.Result.Passed ? "green" : "red";
                    AnsiConsole.MarkupLine($"[{color}]{e.Verdict,-5}[/] {id} [grey]({CliSupport.Seconds(e.Result.Elapsed)})[/]");
                    if (!e.Result.Passed) AnsiConsole.MarkupLine($"      [grey]{Markup.Escape(CliInputs.Escape(e.Reason))}[/]");
                    foreach (var note in e.Result.Notes) AnsiConsole.MarkupLine($"      [grey]note: {Markup.Escape(CliInputs.Escape(note))}[/]");
                    if (e.Outcome.Drift is { } drift)
                        AnsiConsole.MarkupLine($"      [{(drift.Drifted ? "yellow" : "grey")}]{Markup.Escape(CliInputs.Escape(drift.ToString()))}[/]");
                    done.Add(e);
                    int failedSoFar = done.Count(x => !x.Result.Passed);
                    overall.Increment(1);
                    overall.Description = $"scenarios {done.Count}/{scenarios.Count}" + (failedSoFar > 0 ? $" [red]{failedSoFar} failed[/]" : "");
                    if (failFast && !e.Result.Passed) break;
                }
                overall.Value = overall.MaxValue;
            });
        return done;
    }

    private static void PrintSummary(IReadOnlyList<Scenario> scenarios, IReadOnlyList<ScenarioExecution> done)
    {
        string[] header = ["id", "verdict", "first bad module", "reason", "time"];
        var rows = done.Select(e => new[]
        {
            e.Result.Scenario.Id, e.Verdict, e.Result.FirstBadModule ?? "-", e.Reason, CliSupport.Seconds(e.Result.Elapsed),
        }).Concat(scenarios.Skip(done.Count).Select(s => new[] { s.Id, "NOT RUN", "-", "--fail-fast stopped the run", "-" })).ToList();
        Console.WriteLine();
        if (CliSupport.PlainOutput)
        {
            Console.Write(CliSupport.PlainTable(header, rows));
            return;
        }
        var table = new Table().Border(TableBorder.Rounded).Title("summary");
        foreach (var h in header) table.AddColumn(new TableColumn(h) { NoWrap = h is "id" or "verdict" or "first bad module" or "time" });
        foreach (var r in rows)
        {
            var verdict = r[1] switch { "PASS" => "[green]PASS[/]", "NOT RUN" => "[grey]NOT RUN[/]", var v => $"[red]{v}[/]" };
            table.AddRow(Markup.Escape(r[0]), verdict, Markup.Escape(CliInputs.Escape(r[2])), Markup.Escape(CliInputs.Escape(r[3])), r[4]);
        }
        AnsiConsole.Write(table);
    }
}
