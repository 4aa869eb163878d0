using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Live tier: every catalog scenario against the live HF/torch reference. A plain scenario passes when engine and
/// reference agree layer by layer (and token by token for models that generate); a fault scenario passes when the
/// comparison fails at its expected module. The drift of the recorded fixtures against the live reference is printed.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public class CatalogLiveTests(ITestOutputHelper output)
{
    public static TheoryData<string> Scenarios => CatalogContexts.Ids();

    [SkippableTheory]
    [MemberData(nameof(Scenarios))]
    public void Scenario_against_the_live_reference(string id)
    {
        var context = CatalogContexts.Live();
        var outcome = ScenarioRunner.Run(ScenarioCatalog.Find(id)!, context);
        output.WriteLine(outcome.Result.Describe());
        if (outcome.Drift is not null) output.WriteLine(outcome.Drift.ToString());
        Assert.True(outcome.Result.Passed, outcome.Result.Describe());
    }
}
