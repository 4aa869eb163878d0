using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Offline tier: every catalog scenario against the reference outputs recorded in fixtures/ (and the models recorded
/// with them), with no Python at all. A missing recording fails with the command that makes it.
/// </summary>
[Collection(SerialCollection.Name)]
public class CatalogOfflineTests(ITestOutputHelper output)
{
    public static TheoryData<string> Scenarios => CatalogContexts.Ids();

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void Scenario_against_the_recorded_reference(string id)
    {
        var outcome = ScenarioRunner.Run(ScenarioCatalog.Find(id)!, CatalogContexts.Recorded);
        output.WriteLine(outcome.Result.Describe());
        Assert.True(outcome.Result.Passed, outcome.Result.Describe());
    }

    [Fact]
    public void Catalog_ids_are_unique_stable_and_filterable()
    {
        Assert.Contains(ScenarioCatalog.All, s => s.Id == "llama/tp2-sp-pp2/prompt-embeds/fp32");
        Assert.Contains(ScenarioCatalog.All, s => s.Id == "matmul/gemma4-e2b-4dx3d/bf16/fault=matmul-no-nd-broadcast");
        Assert.Equal(ScenarioCatalog.All.Count, ScenarioCatalog.All.Select(s => s.Id).Distinct().Count());
        Assert.All(ScenarioCatalog.Filter("llama,sp,!fault"), s => Assert.True(s.Id.StartsWith("llama") && s.Id.Contains("sp") && !s.Id.Contains("fault")));
        Assert.All(ScenarioCatalog.Filter("llama/*/prompt-embeds/*"), s => Assert.Contains("prompt-embeds", s.Id));
        Assert.All(ScenarioCatalog.All.Where(s => s.ExpectFailure), s => Assert.NotNull(s.ExpectedFirstBadModule));
    }

    [Fact]
    public void A_wrong_id_gets_near_matches()
    {
        var near = ScenarioCatalog.NearMatches("llama/tp2-sp-pp2/prompt-embed/fp32");
        Assert.Equal("llama/tp2-sp-pp2/prompt-embeds/fp32", near[0]);
    }
}
