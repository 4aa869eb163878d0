using Harness.Engine.Capture;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reports;
using Harness.Runs;
using Harness.Scenarios;
using Harness.Tests.Correctness.Scenarios;

namespace Harness.Tests.Correctness.Runs;

/// <summary>
/// Issue 21, "every decode step judged per module": a bug that acts only on generated tokens was caught, when at all,
/// as a token mismatch a few steps in. Now engine and reference are teacher-forced on the reference's tokens, every
/// module is captured at every decode step and judged by the prefill's oracle verdict, and the first divergent
/// (step, module, rank) is named in the result, report.json and the HTML report.
/// </summary>
[Collection(SerialCollection.Name)]
public class DecodeStepTests
{
    [Theory]
    [InlineData("llama/tp1/input-ids/fp32/fault=decode-position-off-by-one")]
    [InlineData("llama/tp1/input-ids/bf16/fault=decode-position-off-by-one")]
    public void A_decode_only_bug_passes_the_prefill_and_is_named_at_its_step_and_module(string id)
    {
        // The generated tokens rotated one position too far: the prompt's forward is untouched, so the prefill verdict
        // passes bit for bit as the correct engine's; decode step 1's attention at layer 0 is where it acts.
        var scenario = ScenarioCatalog.Find(id)!;
        var bug = ScenarioRunner.Run(scenario, CatalogContexts.Recorded).Result;
        var ok = ScenarioRunner.Run(ScenarioCatalog.Find(id[..id.IndexOf("/fault=", StringComparison.Ordinal)])!, CatalogContexts.Recorded).Result;

        Assert.True(bug.Layers.Passed, bug.Describe());
        Assert.Equal(ok.Layers.Rows.Select(r => r.Result?.RelativeL2), bug.Layers.Rows.Select(r => r.Result?.RelativeL2));
        Assert.False(bug.ComparisonPassed);
        var first = bug.Steps!.FirstDivergence!;
        Assert.Equal((1, "model.layers.0.self_attn", 0), (first.Step, first.StepModule, first.Rank));
        Assert.Equal(LayerVerdict.Fail, first.Verdict);
        Assert.Equal(DecodeSteps.Name(1, "model.layers.0.self_attn"), bug.FirstBadModule);
        Assert.True(bug.Passed, bug.Reason);                                   // the catalog's mutation check: caught where expected
        Assert.Contains("caught at step1.model.layers.0.self_attn", bug.Reason);

        // report.json and the HTML report name it too
        var record = ScenarioRecord.From(bug);
        Assert.Equal(new StepDivergence(1, "model.layers.0.self_attn", 0), record.FirstDivergentStep);
        Assert.Contains("first divergent decode step (step 1, model.layers.0.self_attn, rank 0): fail", record.Reason);
        var report = AccuracyReport.Create([record]);
        var loaded = ReportJson.Read(ReportJson.Write(report));
        Assert.Equal(record.FirstDivergentStep, loaded.Scenarios[0].FirstDivergentStep);
        Assert.True(loaded.Scenarios[0].StepsJudged);
        Assert.Contains(loaded.Scenarios[0].Modules, m => m.Step == 1 && m.Module == "model.layers.0.self_attn" && m.Failed);
        Assert.Contains(loaded.Scenarios[0].Modules, m => m.Step == 0 && m.Module == "model.layers.0.self_attn" && !m.Failed);
        var html = HtmlReportWriter.Render(report);
        Assert.Contains("First divergent (step, module, rank): (1, model.layers.0.self_attn, 0).", html);
        Assert.Contains("<td class=\"num fail\" data-step=\"1\"", html);
    }

    [Fact]
    public void Without_the_step_verdict_the_decode_only_bug_is_only_a_token_mismatch()
    {
        // what the issue found: judged by tokens alone the bug shows as a token divergence, at no module or step
        var scenario = ScenarioCatalog.Find("llama/tp1/input-ids/fp32/fault=decode-position-off-by-one")! with { JudgeSteps = false };
        var result = ScenarioRunner.Run(scenario, CatalogContexts.Recorded).Result;
        Assert.Null(result.Steps);
        Assert.False(result.ComparisonPassed);
        Assert.Null(result.FirstBadModule);
        Assert.False(result.Passed, result.Reason);                            // the mutation check cannot name where it acts
        Assert.StartsWith("fault 'decode-position-off-by-one' caught at (no module)", result.Reason);
    }

    [Theory]
    [InlineData("llama/tp1/input-ids/fp32")]
    [InlineData("llama/tp1/input-ids/bf16")]
    [InlineData("llama/tp2-sp-pp2/input-ids/bf16")]
    [InlineData("llama/tp1/prompt-embeds/fp32")]
    [InlineData("gemma3n/tp2/soft-tokens/bf16")]
    [InlineData("gemma4/moe/tp2/text/fp32")]
    [InlineData("gemma4/e2b-like/tp2/mixed/fp32")]
    [InlineData("qwen2-vl/tp2-sp/image/fp32")]
    public void The_correct_engine_passes_every_decode_step_of_every_family(string id)
    {
        var scenario = ScenarioCatalog.Find(id)!;
        var result = ScenarioRunner.Run(scenario, CatalogContexts.Recorded).Result;
        Assert.True(result.ComparisonPassed, result.Describe());
        var steps = result.Steps!;
        Assert.True(steps.Passed, DecodeSteps.Grid(steps));
        // every decode step after the prompt, every module at each: nothing skipped
        var judged = steps.Rows.Where(r => r.Verdict == LayerVerdict.Pass).Select(r => r.Step).Distinct().Order().ToList();
        Assert.True(judged.Count >= 3, DecodeSteps.Grid(steps));
        Assert.Equal(Enumerable.Range(1, judged.Count), judged);
        Assert.All(steps.Rows, r => Assert.NotNull(r.Result?.Oracle));          // the oracle verdict, not a fixed tolerance
    }

    [Fact]
    public void A_step_record_is_named_by_its_step_and_module()
    {
        Assert.Equal("step3.model.norm", DecodeSteps.Name(3, "model.norm"));
        Assert.Equal("model.norm", DecodeSteps.Name(0, "model.norm"));
        Assert.Equal((3, "model.norm"), DecodeSteps.Parse("step3.model.norm"));
        Assert.Equal((0, "steps.model"), DecodeSteps.Parse("steps.model"));
        Assert.Equal((0, "model.layers.0"), DecodeSteps.Parse("model.layers.0"));
        Assert.Equal(["step1.a", "step1.b", "step2.a", "step2.b"], DecodeSteps.Names(3, ["a", "b"]));
    }

    [Fact]
    public void A_recording_without_decode_step_captures_is_named_not_skipped()
    {
        var capture = new ActivationCapture(DecodeSteps.Names(3, ["model.norm"]));
        capture.Record(DecodeSteps.Name(1, "model.norm"), Tensor.Zeros(DType.Float32, 1, 1, 4), ShardSpec.Whole);
        var report = DecodeSteps.Judge(new Dictionary<string, Tensor> { ["model.norm"] = Tensor.Zeros(DType.Float32, 1, 2, 4) }, capture, 3, ["model.norm"]);
        Assert.False(report.Passed);
        Assert.Equal(LayerVerdict.Missing, report.FirstDivergence!.Verdict);
        Assert.Contains("harness fixtures record", report.FirstDivergence.Note);
    }

    [Fact]
    public void The_step_sink_records_only_its_steps_under_their_names_and_the_prefill_sink_only_the_prefill()
    {
        var steps = new ActivationCapture();
        var prefill = new ActivationCapture();
        var stepSink = CaptureSink.DecodeSteps(steps, 3);
        var prefillSink = new CaptureSink(prefill);
        var x = Tensor.Zeros(DType.Float32, 1, 1, 2);
        foreach (var sink in new IActivationSink[] { stepSink, prefillSink })
            for (int s = 0; s <= 3; s++)
                if (sink.Wants("m", s)) sink.Record("m", 0, x, ShardSpec.Whole, s);
        Assert.Equal(["step1.m", "step2.m"], steps.Records.Select(r => r.Module));
        Assert.Equal(["m"], prefill.Records.Select(r => r.Module));
    }

    [Fact]
    public void The_decode_only_fault_is_an_explicit_input_of_the_llama_model()
    {
        Assert.Equal(1, Harness.Engine.Models.FaultMap.Plan(Faults.DecodePositionOffByOne, "llama").Llama.DecodePositionOffset);
        Assert.Equal(0, Harness.Engine.Models.Llama.LlamaOptions.None.DecodePositionOffset);
    }
}
