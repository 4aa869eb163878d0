using Harness.Judge;
using Harness.Runs;
using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// `harness dump` of our own engine judged by `harness judge --dump` gives `harness run`'s verdicts: the same modules and
/// ranks (TP shards, SP token slices with their padding row, PP stages), each with the same verdict, the same first
/// divergent module, on a clean scenario and on catalog scenarios with a planted fault (float32 and bfloat16, token ids
/// and prompt embeddings); every decode step too (the dump carries each step's fed token; the judge runs HF teacher-forced
/// on them): the decode-only fault (the generated token rotated one position past the truth) passes the prompt and is
/// named at (step 1, model.layers.0.self_attn, rank 0), as `run` and `compare` name it.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class EngineDumpJudgeTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData("llama/tp2-sp-pp2/input-ids/fp32")]
    [InlineData("llama/tp2-sp/prompt-embeds/fp32/fault=sp-residual-first-slice")]
    [InlineData("llama/tp2-sp-pp2/input-ids/bf16/fault=sp-residual-first-slice")]
    [InlineData("llama/tp1/input-ids/fp32/fault=decode-position-off-by-one")]
    [InlineData("llama/tp1/input-ids/bf16/fault=decode-position-off-by-one")]
    public void Judge_dump_of_the_engines_own_run_gives_harness_runs_verdicts(string id)
    {
        var client = LiveReference.Client();
        var scenario = ScenarioCatalog.Find(id) ?? throw new InvalidOperationException($"no catalog scenario {id}");
        using var context = ScenarioContext.Live(client);
        var run = ScenarioRunner.Run(scenario, context).Result;                 // `harness run`'s own verdicts
        var dir = client.ScratchDirectory("engine-dump");
        try
        {
            var written = EngineDump.Run(scenario, context, dir);
            output.WriteLine(written.Summary);
            var judged = DumpJudge.Run(written.Directory, written.ModelDirectory, client);
            output.WriteLine(DumpJudge.Describe(judged));
            output.WriteLine(run.Layers.ToString());

            Assert.Equal(run.Layers.Passed, judged.Layers.Passed);
            Assert.Equal(run.Steps?.Passed, judged.Steps?.Passed);
            Assert.Equal(run.Steps?.FirstDivergence?.Label, judged.Steps?.FirstDivergence?.Label);
            Assert.Equal(run.Layers.FirstDivergence?.Label, judged.Layers.FirstDivergence?.Label);
            if (scenario.ExpectedFirstBadModule is { } expected)
                Assert.Equal(expected, judged.Record.FirstBadModule);
            else
                Assert.True(judged.Passed, DumpJudge.Describe(judged));
            static Dictionary<string, LayerVerdict> Verdicts(LayerReport r) => r.Rows.ToDictionary(row => row.Label, row => row.Verdict);
            var runRows = Verdicts(run.Layers);
            Assert.Equal(runRows, Verdicts(judged.Layers));
            Assert.True(runRows.Count >= 20, $"only {runRows.Count} rows");
            var runSteps = Verdicts(Assert.IsType<LayerReport>(run.Steps));             // every decode step, row for row
            Assert.Equal(runSteps, Verdicts(Assert.IsType<LayerReport>(judged.Steps)));
            Assert.True(runSteps.Count >= 20, $"only {runSteps.Count} step rows");
        }
        finally
        {
            client.Release(dir);
        }
    }
}
