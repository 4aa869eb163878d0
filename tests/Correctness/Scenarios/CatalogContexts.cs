using Harness.Scenarios;
using Harness.Tests.Correctness.Live;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>The scenario contexts of a test run: one live (one worker, each reference computed once), one recorded.</summary>
public static class CatalogContexts
{
    private static ScenarioContext? _live;
    private static readonly Lazy<ScenarioContext> RecordedContext = new(() => ScenarioContext.Recorded());
    private static readonly object Gate = new();

    public static ScenarioContext Live()
    {
        var client = LiveReference.Client();
        lock (Gate) return _live ??= ScenarioContext.Live(client);
    }

    public static ScenarioContext Recorded => RecordedContext.Value;

    public static TheoryData<string> Ids(Func<Scenario, bool>? where = null)
    {
        var data = new TheoryData<string>();
        foreach (var s in ScenarioCatalog.All.Where(where ?? (_ => true))) data.Add(s.Id);
        return data;
    }
}
