using Harness.Engine.Capture;
using Harness.Engine.Tensors;
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

    /// <summary>
    /// An engine that records a module twice in one forward (two calls of it on one rank) is judged call by call by both
    /// `run` and `judge --dump`: each record against HF's output of the module, labelled "call 1", "call 2". The second
    /// call here is 1.5 times HF's: `run` (LayerComparison on the engine's capture) fails "call 2" and passes "call 1";
    /// before the judge compared every call it judged call 0 alone and passed this dump.
    /// </summary>
    [SkippableFact]
    public void A_module_recorded_twice_on_a_rank_is_judged_call_by_call_as_run_judges_it()
    {
        var model = TinyGgufLlama.Get();                                      // the judge tests' shared tiny Llama
        var client = LiveReference.Client();
        long[] ids = [2, 100, 200, 300, 17, 250, 9];
        string[] order = ["model.embed_tokens", "model.layers.0.input_layernorm", "model.layers.0.mlp", "model.layers.0", "model.norm"];
        client.Oracle = true;
        var reference = client.Forward(client.ShareDirectory(model.ModelDirectory), DType.Float32, Tensor.FromArray(ids, 1, ids.Length), order).Captured;

        var tap = new EngineDump();                                            // what `harness dump` writes an engine's records with
        var capture = new ActivationCapture();                                 // what `harness run` judges them from
        void Record(string module, Tensor value)
        {
            tap.Record(module, 0, value, ShardSpec.Whole);
            capture.Record(module, value, ShardSpec.Whole, rank: 0);
        }
        foreach (var m in order)
        {
            Record(m, reference[m]);
            if (m == "model.layers.0.mlp") Record(m, Engine.Ops.Elementwise.Mul(reference[m], 1.5));   // the module's second call
        }
        var dir = client.ScratchDirectory("engine-dump-calls");
        try
        {
            tap.Write(dir, 1, new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray(ids, ids.Length) }, null, null,
                new System.Text.Json.Nodes.JsonObject { ["name"] = "test engine calling model.layers.0.mlp twice" });
            var judged = DumpJudge.Run(dir, model.ModelDirectory, client);
            output.WriteLine(DumpJudge.Describe(judged));
            var run = LayerComparison.Run(LayerComparison.Select(reference, order), capture, order);
            output.WriteLine(run.ToString());

            static Dictionary<string, LayerVerdict> Verdicts(LayerReport r) => r.Rows.ToDictionary(row => row.Label, row => row.Verdict);
            Assert.Equal(Verdicts(run), Verdicts(judged.Layers));
            Assert.Equal(LayerVerdict.Pass, judged.Layers.Rows.Single(r => r.Label == "model.layers.0.mlp (rank 0, call 1)").Verdict);
            Assert.Equal("model.layers.0.mlp (rank 0, call 2)", judged.Layers.FirstDivergence?.Label);
            Assert.Equal(run.FirstDivergence?.Label, judged.Layers.FirstDivergence?.Label);
            Assert.False(judged.Passed);
        }
        finally
        {
            client.Release(dir);
        }
    }
}
