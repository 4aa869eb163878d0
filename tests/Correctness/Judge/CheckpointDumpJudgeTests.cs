using Harness.Commands;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Judge;
using Harness.Runs;
using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// `harness dump --model DIR` works for every registered family, not only Llama: it is `compare --model`'s own run of the
/// checkpoint (the family from the registry, its checks, layout and --fault), dumped instead of printed; and `harness
/// judge --dump` of that dump gives compare's verdicts (prompt and every decode step, the same first divergent module),
/// the family's reference computed through its checkpoint scenario (<see cref="ModelFamily.CheckpointScenario"/>). Per
/// family a clean run passes both ways and a fault `compare --fault` plants there fails both ways at the same module.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class CheckpointDumpJudgeTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData("tiny-gemma3n-fp32", 2, null)]
    [InlineData("tiny-gemma3n-fp32", 2, "sparse-topk-rank-local")]
    [InlineData("tiny-gemma4-moe-fp32", 2, null)]
    [InlineData("tiny-gemma4-moe-fp32", 1, "gate-up-swapped")]
    [InlineData("tiny-qwen2-vl-fp32", 2, null)]
    [InlineData("tiny-qwen2-vl-fp32", 2, "attention-reshape-hidden-size")]
    [InlineData("tiny-llama-fp32", 2, "residual-scale-off")]
    public void Dump_model_of_a_family_checkpoint_judged_gives_compares_verdict(string model, int tp, string? fault)
    {
        var client = LiveReference.Client();
        var checkpoint = Path.Combine(Fixtures.DefaultDirectory(), "models", model);
        var dir = client.ScratchDirectory("checkpoint-dump");
        try
        {
            EngineDump.Written? written = null;
            int code = DumpCommand.Checkpoint(new CompareCommand.Options(checkpoint, tp, 1, false, "fp32", null, null) { Fault = fault }, dir, w => written = w);
            Assert.Equal(0, code);
            var compared = Assert.IsType<EngineDump.Written>(written).Result;     // compare's own result of the dumped run
            output.WriteLine(written.Summary);
            Assert.Equal(checkpoint, written.ModelDirectory);
            Assert.Equal(tp, written.WorldSize);

            var judged = DumpJudge.Run(written.Directory, written.ModelDirectory, client);
            output.WriteLine(DumpJudge.Describe(judged));
            output.WriteLine(compared.Layers.ToString());

            Assert.Equal(compared.Passed, judged.Passed);
            Assert.Equal(fault is null, judged.Passed);                          // clean passes; the planted fault is caught
            Assert.Equal(compared.FirstBadModule, judged.Record.FirstBadModule);
            Assert.Equal(compared.Layers.FirstDivergence?.Label, judged.Layers.FirstDivergence?.Label);
            Assert.Equal(compared.Steps?.FirstDivergence?.Label, judged.Steps?.FirstDivergence?.Label);
            // row for row: each judged (module, rank, step) has compare's verdict; compare's rows the dump has no record of
            // are the modules the engine never reached after a failure (Missing in both readings)
            static Dictionary<string, LayerVerdict> Verdicts(LayerReport? r) => r?.Rows.ToDictionary(row => row.Label, row => row.Verdict) ?? [];
            foreach (var (mine, theirs) in new[] { (judged.Layers, compared.Layers), (judged.Steps, compared.Steps) })
            {
                var j = Verdicts(mine);
                var c = Verdicts(theirs);
                Assert.All(j, kv => Assert.Equal((kv.Key, c.GetValueOrDefault(kv.Key, LayerVerdict.Extra)), (kv.Key, kv.Value)));
                Assert.All(c.Where(kv => !j.ContainsKey(kv.Key)), kv => Assert.Equal((kv.Key, LayerVerdict.Missing), (kv.Key, kv.Value)));
                if (compared.EngineError is null) Assert.Equal(c.Count, j.Count);
            }
            Assert.Equal(compared.Steps is not null, judged.Record.StepsJudged);  // an engine that failed in its prompt has no decode steps
        }
        finally
        {
            client.Release(dir);
        }
    }

    /// <summary>
    /// The family's reference is teacher-forced on the dump's fed tokens, not on its own: the engine's clean dump with decode
    /// step 1's fed token changed (on every rank, as another engine that chose another token would have written it) fails
    /// first at step 1's embedding, where HF fed the changed token and the engine's records were made on the original.
    /// The prompt's forward still passes.
    /// </summary>
    [SkippableTheory]
    [InlineData("tiny-gemma3n-fp32", "model.language_model.embed_tokens")]
    [InlineData("tiny-qwen2-vl-fp32", "model.language_model.embed_tokens")]
    public void A_family_reference_is_fed_the_dumps_tokens_at_every_decode_step(string model, string embedding)
    {
        var client = LiveReference.Client();
        var checkpoint = Path.Combine(Fixtures.DefaultDirectory(), "models", model);
        var dir = client.ScratchDirectory("checkpoint-dump-forced");
        try
        {
            EngineDump.Written? written = null;
            Assert.Equal(0, DumpCommand.Checkpoint(new CompareCommand.Options(checkpoint, 1, 1, false, "fp32", null, null), dir, w => written = w));
            Assert.True(written!.Result.Steps?.Passed, written.Summary);
            foreach (var file in Directory.GetFiles(dir, "rank-*.safetensors"))
            {
                Dictionary<string, Tensor> tensors;
                using (var f = SafetensorsFile.Open(file))
                    tensors = f.Names.ToDictionary(n => n, n => f.ReadTensor(n).Contiguous());
                long original = tensors["input/input_ids/step1"].ToInt64Array()[0];
                tensors["input/input_ids/step1"] = Tensor.FromArray([original == 5 ? 6L : 5L], 1, 1);
                SafetensorsWriter.Save(file, tensors);
            }
            var judged = DumpJudge.Run(dir, checkpoint, client);
            output.WriteLine(DumpJudge.Describe(judged));
            Assert.True(judged.Layers.Passed, judged.Layers.ToString());
            Assert.Equal(new Harness.Reports.StepDivergence(1, embedding, 0), judged.Record.FirstDivergentStep);
        }
        finally
        {
            client.Release(dir);
        }
    }
}
