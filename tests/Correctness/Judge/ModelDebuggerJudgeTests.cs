using System.Text.Json.Nodes;
using Harness.Judge;
using Harness.Reference;
using Harness.Runs;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// transformers' own model debugger (model_addition_debugger_context with use_repr=False: a call tree JSON plus one
/// safetensors file per leaf module's output) read by `harness judge --dump`: the tiny Llama's own forward passes module
/// by module; the same forward with rms_norm_eps 0.05 (for 3e-5) fails first at layer 0's input_layernorm. The debugger
/// runs on HF itself through a test-only op (model_debugger_ops.py) in a worker of the class's own: a user runs the
/// debugger on their engine, so the shipped worker has no such op.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class ModelDebuggerJudgeTests(ModelDebuggerJudgeTests.DebuggerWorker worker, ITestOutputHelper output)
    : IClassFixture<ModelDebuggerJudgeTests.DebuggerWorker>
{
    /// <summary>The class's worker: the shipped one plus hf_model_debugger_dump; started by the first test's call.</summary>
    public sealed class DebuggerWorker : IDisposable
    {
        private readonly ReferenceWorker _worker = new(workerSource: TestWorkerSource.With("model_debugger_ops.py"));
        public ReferenceClient Client { get; }
        public DebuggerWorker() => Client = new ReferenceClient(_worker);
        public void Dispose() => _worker.Dispose();
    }

    private static readonly long[] Ids = [2, 100, 200, 300, 17, 250, 9];

    private DumpVerdict DebugAndJudge(JsonObject config, int? generateNewTokens = null)
    {
        var model = TinyGgufLlama.Get();
        LiveReference.Client();   // skip or fail as the tier says
        var client = worker.Client;
        var dir = client.ScratchDirectory("judge-model-debugger");
        try
        {
            client.Invoke("hf_model_debugger_dump", new JsonObject
            {
                ["model_dir"] = client.WorkerPath(model.ModelDirectory),
                ["out_dir"] = client.WorkerPath(dir),
                ["input_ids"] = new JsonArray(Ids.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
                ["config"] = config,
                ["max_new_tokens"] = generateNewTokens,
            });
            Assert.NotNull(ModelDebuggerDump.FindTree(dir));
            var verdict = DumpJudge.Run(dir, model.ModelDirectory, client);
            output.WriteLine(DumpJudge.Describe(verdict));
            return verdict;
        }
        finally
        {
            client.Release(dir);
        }
    }

    [SkippableFact]
    public void The_model_debuggers_safetensors_output_of_the_same_model_passes_module_by_module()
    {
        var v = DebugAndJudge(new JsonObject());
        Assert.True(v.Passed, DumpJudge.Describe(v));
        Assert.Equal("model debugger, rank 0", v.Record.Layout);
        // the debugger keeps leaf modules only: projections, norms, act_fn, lm_head; not a layer's or an mlp's output
        foreach (var m in new[] { "model.embed_tokens", "model.layers.0.input_layernorm", "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.act_fn", "model.norm", "lm_head" })
            Assert.Equal(LayerVerdict.Pass, Assert.Single(v.Layers.Rows, r => r.Module == m).Verdict);
        Assert.DoesNotContain(v.Layers.Rows, r => r.Module == "model.layers.0");
    }

    [SkippableFact]
    public void A_wrong_rms_norm_epsilon_under_the_debugger_fails_at_layer_0_input_layernorm()
    {
        var v = DebugAndJudge(new JsonObject { ["rms_norm_eps"] = 0.05 });
        Assert.False(v.Passed);
        Assert.Equal("model.layers.0.input_layernorm", v.Record.FirstBadModule);
    }

    /// <summary>
    /// The debugger around generate() keeps its last forward only (transformers 5.12.1 rewrites the tree and every module's
    /// file on each top-level forward): a decode step fed one token at position 9 with neither the prompt nor the tokens
    /// before it, on which HF cannot be rerun. Judging it as a prompt would compare a cached step with a one-token prompt;
    /// the judge refuses it in one line naming the tree and why (exit 2 on the CLI).
    /// </summary>
    [SkippableFact]
    public void The_debugger_around_generate_keeps_its_last_decode_step_only_and_the_judge_refuses_it_naming_why()
    {
        var e = Assert.Throws<Harness.Engine.IO.InputException>(() => DebugAndJudge(new JsonObject(), generateNewTokens: 4));
        output.WriteLine(e.Message);
        Assert.Contains("LlamaForCausalLM_debug_tree_FULL_TENSORS.json", e.Message);
        Assert.Contains("position_ids start at 9", e.Message);                 // the 7-token prompt, then steps at 7, 8, 9
        Assert.Contains("a decode step", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
