using Harness.Reference;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>`harness fixtures record [filter]`: recomputes the recorded reference outputs (and models) with the live reference.</summary>
public static class FixturesCommand
{
    public static int Record(string? filter, string? fixturesDirectory)
    {
        var scenarios = ScenarioCatalog.Filter(filter);
        if (scenarios.Count == 0)
        {
            Console.Error.WriteLine($"no scenario matches '{filter}'; did you mean: {string.Join(", ", ScenarioCatalog.NearMatches(filter ?? ""))}");
            return 2;
        }
        var worker = ReferenceWorker.Shared;
        if (!worker.IsAvailable)
        {
            Console.Error.WriteLine($"fixtures record needs the live reference: {worker.Description}");
            return 1;
        }
        var context = ScenarioContext.Live(ReferenceClient.Shared, fixturesDirectory);
        Console.WriteLine($"recording {scenarios.Count} scenarios with {ReferenceClient.Shared.GetVersions()} into {context.FixturesDirectory}");
        var files = Fixtures.Record(context, scenarios, Console.WriteLine);
        Console.WriteLine($"{files.Count} files written");
        return 0;
    }
}
