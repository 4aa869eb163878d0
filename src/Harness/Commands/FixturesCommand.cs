using System.CommandLine;
using Harness.Reference;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>`harness fixtures record [filter]`: recomputes the recorded reference outputs (and models) with the live reference.</summary>
public static class FixturesCommand
{
    internal static Command Create()
    {
        var filter = new Argument<string?>("filter")
        {
            Description = "Which scenarios to record (same syntax as `harness list`). Empty: all.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var directory = new Option<string?>("--fixtures")
        {
            Description = "The fixtures folder to write (default: HARNESS_FIXTURES, else fixtures/ of the repository).",
            HelpName = "DIR",
        };
        var record = new Command("record",
            "Record the catalog's reference outputs (and the models they were computed on) with the live reference, for `run --offline`. " +
            "Exit 0 written, 1 no live reference, 2 no scenario matches.")
        {
            filter, directory,
        };
        record.SetAction(r => Record(r.GetValue(filter), r.GetValue(directory)));
        return new Command("fixtures", "The recorded reference outputs that `run --offline` and `repro --offline` compare against.") { record };
    }

    public static int Record(string? filter, string? fixturesDirectory)
    {
        var scenarios = ScenarioCatalog.Filter(filter);
        if (scenarios.Count == 0)
        {
            Console.Error.WriteLine($"harness fixtures record: no scenario matches '{filter}'");
            CliSupport.PrintNearMatches(filter ?? "", Console.Error);
            return ExitCodes.Usage;
        }
        var worker = ReferenceWorker.Shared;
        if (!worker.IsAvailable)
        {
            Console.Error.WriteLine($"fixtures record needs the live reference: {worker.Description}");
            return ExitCodes.Failed;
        }
        var context = ScenarioContext.Live(ReferenceClient.Shared, fixturesDirectory);
        Console.WriteLine($"recording {scenarios.Count} scenarios with {ReferenceClient.Shared.GetVersions()} into {context.FixturesDirectory}");
        var files = Fixtures.Record(context, scenarios, Console.WriteLine);
        Console.WriteLine($"{files.Count} files written");
        return ExitCodes.Ok;
    }
}
