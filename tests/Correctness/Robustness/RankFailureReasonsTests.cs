using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Tensors;
using Harness.Reports;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 24, "lost reasons": at Gemma3n's E4B size both ranks failed outside any module, and compare and the report said
/// only "engine failed in (unknown module): 2 of 2 ranks failed:", the first line of the error. Now the one line names
/// each rank's exception and where it was, in the result, report.json's record and the HTML report.
/// </summary>
public sealed class RankFailureReasonsTests
{
    private static readonly string[] Modules = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm"];

    [Fact]
    public void Two_ranks_that_fail_outside_any_module_are_each_named_with_their_exception_and_place()
    {
        var capture = new ActivationCapture(Modules);
        capture.Record("model.embed_tokens", Tensor.FromArray([1f, 2f], 2), ShardSpec.Whole, rank: 0);
        capture.Record("model.embed_tokens", Tensor.FromArray([1f, 2f], 2), ShardSpec.Whole, rank: 1);
        capture.Record("model.layers.0", Tensor.FromArray([1f, 2f], 2), ShardSpec.Whole, rank: 1);
        var e = new RankFailedException(2, [
            (0, new OutOfMemoryException("Array dimensions exceeded supported range.")),
            (1, new InvalidOperationException("cache [2, 513, 24] cannot take 600 rows\nsecond line")),
        ]);

        var (module, error) = EngineFailures.Settle(e, capture, Modules);

        Assert.Null(module);
        Assert.Equal("2 of 2 ranks failed: rank 0 after model.embed_tokens: OutOfMemoryException: Array dimensions exceeded supported range.; " +
                     "rank 1 after model.layers.0: InvalidOperationException: cache [2, 513, 24] cannot take 600 rows", error);

        var scenario = ScenarioCatalog.All.First(s => s.Id == "llama/tp2/input-ids/fp32");
        var result = new ScenarioResult(scenario, new LayerReport([]), null, error, module, TimeSpan.FromSeconds(1));
        var record = ScenarioRecord.From(result);
        Assert.Contains("rank 0 after model.embed_tokens: OutOfMemoryException", record.EngineError);
        Assert.Contains("rank 1 after model.layers.0: InvalidOperationException", record.Reason);
        var html = HtmlReportWriter.Render(AccuracyReport.Create([record]));
        Assert.Contains("rank 1 after model.layers.0: InvalidOperationException: cache [2, 513, 24] cannot take 600 rows", html);
    }

    [Fact]
    public void A_rank_whose_error_names_its_module_is_placed_in_it_and_released_ranks_are_counted()
    {
        var capture = new ActivationCapture(Modules);
        var e = new RankFailedException(3, [
            (2, new ModuleFailedException("model.layers.1", 2, new ArgumentException("boom"))),
            (0, new CollectiveException(CollectiveFailure.PeerFailed, "released: rank 2 failed")),
        ]);
        Assert.Equal("2 of 3 ranks failed: rank 2 in model.layers.1: ArgumentException: boom; 1 more released when it failed",
            EngineFailures.RankReasons(e, capture));
    }
}
