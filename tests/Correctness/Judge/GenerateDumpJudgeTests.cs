using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Judge;
using Harness.Reference;
using Harness.Runs;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// `harness judge --dump` judges every decode step of a foreign engine's generation, not only the prompt's forward: HF's
/// own generate() (greedy, KV cache) dumped through the drop-in hook (harness_dump.py's generation(): each forward one step,
/// each step's fed token saved) passes at every step and module against HF teacher-forced on the dump's tokens with the
/// float64 oracle; a bug that acts only after the prompt (the decode loop's position ids one past the truth; one module's
/// output doctored at step 2 only) passes the prompt's forward and is named at its (step, module, rank).
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class GenerateDumpJudgeTests(ITestOutputHelper output)
{
    private static readonly long[] Ids = [2, 100, 200, 300, 17, 250, 9];
    private const int NewTokens = 4;                                          // the prompt's forward + 3 decode steps

    private DumpVerdict GenerateDumpAndJudge(string? fault, DType dtype)
    {
        var model = TinyGgufLlama.Get();
        var client = LiveReference.Client();
        var dump = client.ScratchDirectory("judge-generate-dump");
        try
        {
            string source;
            using (var s = typeof(ReferenceWorker).Assembly.GetManifestResourceStream("harness_dump.py")!)
            using (var r = new StreamReader(s))
                source = r.ReadToEnd();
            var reply = client.Invoke("judge_hf_generate_dump", new JsonObject
            {
                ["model_dir"] = client.WorkerPath(model.ModelDirectory),
                ["out_dir"] = client.WorkerPath(dump),
                ["input_ids"] = new JsonArray(Ids.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
                ["max_new_tokens"] = NewTokens,
                ["dtype"] = dtype.TorchName(),
                ["fault"] = fault,
                ["dump_source"] = source,
            }).Result;
            output.WriteLine($"generated {reply["tokens"]!.ToJsonString()} in {reply["forwards"]} forwards");
            Assert.Equal(NewTokens, (int)reply["forwards"]!);
            var verdict = DumpJudge.Run(dump, model.ModelDirectory, client, dtype);
            output.WriteLine(DumpJudge.Describe(verdict));
            return verdict;
        }
        finally
        {
            client.Release(dump);
        }
    }

    [SkippableTheory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void Hfs_own_generate_dumped_by_the_drop_in_hook_passes_at_every_decode_step_and_module(string dtype)
    {
        var v = GenerateDumpAndJudge(null, dtype == "bf16" ? DType.BFloat16 : DType.Float32);
        Assert.True(v.Passed, DumpJudge.Describe(v));
        Assert.True(v.Record.StepsJudged);
        var steps = Assert.IsType<LayerReport>(v.Steps);
        Assert.Equal([1, 2, 3], steps.Rows.Select(r => r.Step).Distinct().Order());
        // every module at every step, by the oracle verdict (the decode-step bound)
        foreach (var m in new[] { "model.embed_tokens", "model.rotary_emb", "model.layers.0.self_attn.q_proj", "model.layers.1.mlp", "lm_head" })
            for (int s = 1; s < NewTokens; s++)
            {
                var row = Assert.Single(steps.Rows, r => r.Step == s && r.StepModule == m);
                Assert.Equal(LayerVerdict.Pass, row.Verdict);
                Assert.NotNull(row.Result?.Oracle);
            }
    }

    [SkippableTheory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void Decode_position_ids_one_past_the_truth_pass_the_prompt_and_are_named_at_step_1_rotary_emb(string dtype)
    {
        var v = GenerateDumpAndJudge("decode-position-off-by-one", dtype == "bf16" ? DType.BFloat16 : DType.Float32);
        Assert.False(v.Passed);
        Assert.True(v.Layers.Passed, v.Layers.ToString());                    // the prompt's forward is right
        Assert.Equal(new Harness.Reports.StepDivergence(1, "model.rotary_emb", 0), v.Record.FirstDivergentStep);
        Assert.Equal("step1.model.rotary_emb", v.Record.FirstBadModule);
        // the embedding does not see positions: it passes at step 1, before the divergence
        Assert.Equal(LayerVerdict.Pass, Assert.Single(v.Steps!.Rows, r => r.Step == 1 && r.StepModule == "model.embed_tokens").Verdict);
    }

    [SkippableTheory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void A_module_output_doctored_at_decode_step_2_only_is_named_at_step_2_and_that_module(string dtype)
    {
        var v = GenerateDumpAndJudge("doctor-step2:model.layers.1.mlp", dtype == "bf16" ? DType.BFloat16 : DType.Float32);
        Assert.False(v.Passed);
        Assert.True(v.Layers.Passed, v.Layers.ToString());
        Assert.Equal(new Harness.Reports.StepDivergence(2, "model.layers.1.mlp", 0), v.Record.FirstDivergentStep);
        var steps = v.Steps!;
        Assert.All(steps.Rows.Where(r => r.Step == 1), r => Assert.Equal(LayerVerdict.Pass, r.Verdict));
        var doctored = Assert.Single(steps.Rows, r => r.Step == 2 && r.StepModule == "model.layers.1.mlp");
        Assert.False(doctored.Result!.Oracle!.Passed);
    }
}
