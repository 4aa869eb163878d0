using System.CommandLine;
using Harness.Engine.Runtime;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>`harness repro ID [--fault NAME] [--offline]`: one scenario, verbosely; the exit code is the comparison's.</summary>
internal static class ReproCommand
{
    public static Command Create()
    {
        var id = new Argument<string>("id") { Description = "The scenario id, exactly as `harness list` prints it." };
        var fault = new Option<string?>("--fault")
        {
            Description = $"Inject a known engine fault into this scenario (any scenario, any fault): {string.Join(", ", Faults.Known.Keys.Order(StringComparer.Ordinal))}.",
            HelpName = "NAME",
        };
        var offline = new Option<bool>("--offline") { Description = "Use the recorded reference in fixtures/ (no Python needed) instead of the live one." };
        var command = new Command("repro",
            "Run one scenario verbosely: its description, the first divergent module with both shapes and its error table, the layer table, " +
            "and the first divergent token with both sides' top-k. Exit code: 0 when engine and reference agree, 1 when they diverge " +
            "(the comparison itself, NOT the mutation-check verdict: a fault scenario that catches its fault exits 1), 2 on usage errors.")
        {
            id, fault, offline,
        };
        command.SetAction(r => Run(r.GetValue(id)!, r.GetValue(fault), r.GetValue(offline)));
        return command;
    }

    public static int Run(string id, string? fault, bool offline)
    {
        if (fault is not null && !Faults.Known.ContainsKey(fault))
        {
            Console.Error.WriteLine($"harness repro: unknown fault '{fault}'");
            CliSupport.PrintKnownFaults(Console.Error);
            return ExitCodes.Usage;
        }
        var scenario = ScenarioCatalog.Find(id);
        if (scenario is null)
        {
            Console.Error.WriteLine($"harness repro: no scenario with id '{id}'");
            CliSupport.PrintNearMatches(id, Console.Error);
            return ExitCodes.Usage;
        }
        if (fault is not null) scenario = CliSupport.WithFault(scenario, fault);
        var context = offline ? ScenarioContext.Recorded() : CliSupport.LiveContext("repro");
        if (context is null) return ExitCodes.Usage;
        return VerboseReport.RunAndPrint(scenario, context);
    }
}
