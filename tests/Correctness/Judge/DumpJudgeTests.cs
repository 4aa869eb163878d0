using System.Text.Json.Nodes;
using Harness.Judge;
using Harness.Reference;
using Harness.Runs;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// `harness judge --dump` on a real foreign engine: transformers' own tensor parallelism (tp_plan="auto", two gloo
/// processes on the CPU, initialised through a file) dumped by harness_dump.py and judged module by module, rank by
/// rank, against the single-process HF model with the float64 oracle. A tp_plan that declares the row-wise o_proj
/// column-wise is caught at o_proj, naming the ranks. generate() under TP=2 is judged at every decode step too (each
/// rank's shards against their slices of HF teacher-forced on the dumped tokens), and a bug on one rank after the prompt
/// is named at its (step, module, rank).
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class DumpJudgeTests(ITestOutputHelper output)
{
    private static readonly long[] Ids = [2, 100, 200, 300, 17, 250, 9];

    private DumpVerdict DumpAndJudge(JsonObject plan, int newTokens = 0, string? doctor = null)
    {
        var model = TinyGgufLlama.Get();
        var client = LiveReference.Client();
        var dump = client.ScratchDirectory("judge-tp-dump");
        string source;
        using (var s = typeof(ReferenceWorker).Assembly.GetManifestResourceStream("harness_dump.py")!)
        using (var r = new StreamReader(s))
            source = r.ReadToEnd();
        var ranks = client.Invoke("judge_hf_tp_dump", new JsonObject
        {
            ["model_dir"] = client.WorkerPath(model.ModelDirectory),
            ["out_dir"] = client.WorkerPath(dump),
            ["world_size"] = 2,
            ["input_ids"] = new JsonArray(Ids.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
            ["plan"] = plan,
            ["dump_source"] = source,
            ["timeout"] = 240,
            ["max_new_tokens"] = newTokens,
            ["doctor"] = doctor,
        }).Result["ranks"]!.AsArray();
        foreach (var r in ranks) output.WriteLine($"rank {r!["rank"]}: exit {r["code"]}\n{r["log_tail"]}");
        var verdict = DumpJudge.Run(dump, model.ModelDirectory, client);
        output.WriteLine(DumpJudge.Describe(verdict));
        return verdict;
    }

    [SkippableFact]
    public void Transformers_tp2_dumped_by_harness_dump_passes_module_by_module_against_single_process_hf()
    {
        var v = DumpAndJudge(new JsonObject());
        Assert.True(v.Passed, DumpJudge.Describe(v));
        // both ranks' shards were compared against their slices, by the oracle verdict
        var q = v.Layers.Rows.Where(r => r.Module == "model.layers.0.self_attn.q_proj").ToList();
        Assert.Equal([0, 1], q.Select(r => r.Rank));
        Assert.All(q, r => Assert.NotNull(r.Result?.Oracle));
        Assert.Contains(v.Layers.Rows, r => r.Module == "lm_head" && r.Verdict == LayerVerdict.Pass);
        Assert.True(v.Layers.Rows.Count(r => r.Verdict == LayerVerdict.Pass) >= 40, $"{v.Layers.Rows.Count} rows");
    }

    [SkippableFact]
    public void A_row_wise_down_proj_without_its_all_reduce_is_caught_at_down_proj_on_each_rank_by_the_oracle()
    {
        // the plan names a row-wise style that never all-reduces: each rank carries its partial sum on, silently
        var v = DumpAndJudge(new JsonObject { ["layers.*.mlp.down_proj"] = "rowwise_without_all_reduce" });
        Assert.False(v.Passed);
        Assert.Empty(v.RankErrors);
        Assert.Equal("model.layers.0.mlp.down_proj", v.Record.FirstBadModule);
        var rows = v.Layers.Rows.Where(r => r.Module == "model.layers.0.mlp.down_proj").ToList();
        Assert.Equal([0, 1], rows.Select(r => r.Rank));
        Assert.All(rows, r => Assert.Equal(LayerVerdict.Fail, r.Verdict));
        Assert.All(rows, r => Assert.False(r.Result!.Oracle!.Passed));
    }

    [SkippableFact]
    public void A_row_wise_o_proj_declared_column_wise_in_the_tp_plan_is_caught_at_o_proj_naming_the_rank()
    {
        var v = DumpAndJudge(new JsonObject { ["layers.*.self_attn.o_proj"] = "colwise" });
        Assert.False(v.Passed);
        Assert.Equal("model.layers.0.self_attn.o_proj", v.Record.FirstBadModule);
        Assert.Contains(v.RankErrors, e => e.StartsWith("rank 0 failed in model.layers.0.self_attn.o_proj", StringComparison.Ordinal));
        Assert.Contains(v.RankErrors, e => e.StartsWith("rank 1 failed in model.layers.0.self_attn.o_proj", StringComparison.Ordinal));
        // everything before it passed: the first divergence is the planted layer, not earlier
        var before = v.Layers.Rows.TakeWhile(r => r.Module != "model.layers.0.self_attn.o_proj").ToList();
        Assert.NotEmpty(before);
        Assert.All(before, r => Assert.Equal(LayerVerdict.Pass, r.Verdict));
    }

    [SkippableFact]
    public void Transformers_tp2_generate_dumped_by_harness_dump_passes_at_every_decode_step_on_both_ranks()
    {
        var v = DumpAndJudge(new JsonObject(), newTokens: 4);
        Assert.True(v.Passed, DumpJudge.Describe(v));
        var steps = Assert.IsType<LayerReport>(v.Steps);
        Assert.Equal([1, 2, 3], steps.Rows.Select(r => r.Step).Distinct().Order());
        // a column-wise shard at every step, on each rank against its slice, by the oracle
        var q = steps.Rows.Where(r => r.StepModule == "model.layers.1.self_attn.q_proj").ToList();
        Assert.Equal(6, q.Count);
        Assert.Equal([0, 1], q.Select(r => r.Rank).Distinct().Order());
        Assert.All(q, r => Assert.True(r.Result?.Oracle?.Passed, r.Label));
    }

    [SkippableFact]
    public void A_tp2_shard_doctored_on_rank_1_at_decode_step_2_only_is_named_at_step_2_up_proj_rank_1()
    {
        var v = DumpAndJudge(new JsonObject(), newTokens: 4, doctor: "1:model.layers.1.mlp.up_proj");
        Assert.False(v.Passed);
        Assert.True(v.Layers.Passed, v.Layers.ToString());                    // the prompt's forward is right on both ranks
        Assert.Equal(new Harness.Reports.StepDivergence(2, "model.layers.1.mlp.up_proj", 1), v.Record.FirstDivergentStep);
        var steps = v.Steps!;
        Assert.All(steps.Rows.Where(r => r.Step == 1), r => Assert.Equal(LayerVerdict.Pass, r.Verdict));
        // rank 0's shard of the same module at the same step is right
        Assert.Equal(LayerVerdict.Pass, Assert.Single(steps.Rows, r => r.Step == 2 && r.StepModule == "model.layers.1.mlp.up_proj" && r.Rank == 0).Verdict);
    }
}
