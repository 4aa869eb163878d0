using Harness.Judge;
using Harness.Reports;
using Harness.Runs;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// llama.cpp judged module by module at every step: the tiny Llama's GGUF (converted by the packaged converter) run
/// through libllama with its graph evaluation callback (llamacpp_dump.py) on the prompt and three decode steps, fed the
/// reference's greedy tokens (teacher forcing, as `harness run` feeds its engine), its named graph outputs mapped to HF's
/// modules and judged per (step, module) by `harness judge --dump`'s oracle verdict, its own choices token by token. The
/// clean GGUF passes every mapped module at every step and its tokens; a wrong RMSNorm epsilon in its metadata fails at
/// layer 0's input_layernorm, a wrong RoPE base at layer 0's o_proj (RoPE acts on Q and K after their projections,
/// inside attention, where HF has no module) in the prompt and at every decode step, and, on a one-token prompt (position
/// 0's rotation is the identity, so the prompt's forward passes), first at decode step 1's o_proj; Q and K left in
/// llama.cpp's rotary row order (the converter's permutation not undone) at layer 0's q_proj.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class LlamaCppJudgeTests(ITestOutputHelper output)
{
    private static readonly long[] Ids = [2, 100, 200, 300, 17, 250, 9];
    private const int NewTokens = 4;                                          // the prompt's forward + 3 decode steps

    private DumpVerdict Judge(string gguf, bool llamaLayout = false, long[]? ids = null)
    {
        var model = TinyGgufLlama.Get();
        var client = LiveReference.Client();
        var dir = client.ScratchDirectory("judge-llamacpp-dump");
        try
        {
            var verdict = LlamaCppDump.Judge(client, gguf, model.ModelDirectory, ids ?? Ids, dir, NewTokens, llamaLayout: llamaLayout);
            output.WriteLine($"llama.cpp {verdict.Engine!.Description}: {verdict.Engine.Entries} entries; unmapped {string.Join(", ", verdict.Engine.Unmapped.Distinct())}");
            output.WriteLine(DumpJudge.Describe(verdict));
            return verdict;
        }
        finally
        {
            client.Release(dir);
        }
    }

    [SkippableFact]
    public void The_converted_gguf_passes_module_by_module_at_every_decode_step_through_libllamas_eval_callback()
    {
        var v = Judge(TinyGgufLlama.Get().Gguf);
        Assert.True(v.Passed, DumpJudge.Describe(v));
        // every module of the map for both layers, judged by the oracle (q_proj and k_proj after undoing the rotary permutation)
        string[] perLayer = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "self_attn",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp"];
        var expected = new[] { "model.embed_tokens", "model.norm", "lm_head", "model.layers.0", "model.layers.1" }
            .Concat(perLayer.SelectMany(m => new[] { $"model.layers.0.{m}", $"model.layers.1.{m}" })).ToList();
        foreach (var m in expected)
        {
            var row = Assert.Single(v.Layers.Rows, r => r.Module == m);
            Assert.Equal(LayerVerdict.Pass, row.Verdict);
            Assert.NotNull(row.Result?.Oracle);
            for (int step = 1; step < NewTokens; step++)                       // and at every decode step, by the decode-step bound
            {
                var stepRow = Assert.Single(v.Steps!.Rows, r => r.Step == step && r.StepModule == m);
                Assert.Equal(LayerVerdict.Pass, stepRow.Verdict);
                Assert.NotNull(stepRow.Result?.Oracle);
            }
        }
        Assert.Equal(expected.Count * (NewTokens - 1), v.Steps!.Rows.Count);
        // llama.cpp's own choices: the reference's tokens at every step (no divergence on the clean GGUF)
        var tokens = Assert.IsType<TokenReport>(v.Tokens);
        Assert.Equal(TokenVerdict.Identical, tokens.Verdict);
        Assert.Equal(NewTokens, tokens.ReferenceLength);
    }

    [SkippableFact]
    public void A_wrong_rms_norm_epsilon_in_the_gguf_fails_at_layer_0_input_layernorm()
    {
        var v = Judge(TinyGgufLlama.Get().GgufWrongEpsilon);
        Assert.False(v.Passed);
        Assert.Equal("model.layers.0.input_layernorm", v.Record.FirstBadModule);
        Assert.Equal(LayerVerdict.Pass, v.Layers.Rows.Single(r => r.Module == "model.embed_tokens").Verdict);
    }

    [SkippableFact]
    public void A_wrong_rope_base_in_the_gguf_fails_at_layer_0_o_proj_after_the_q_k_v_projections_pass_in_the_prompt_and_every_step()
    {
        var v = Judge(TinyGgufLlama.Get().GgufWrongRopeBase);
        Assert.False(v.Passed);
        Assert.Equal("model.layers.0.self_attn.o_proj", v.Record.FirstBadModule);
        foreach (var m in new[] { "q_proj", "k_proj", "v_proj" })
            Assert.Equal(LayerVerdict.Pass, v.Layers.Rows.Single(r => r.Module == $"model.layers.0.self_attn.{m}").Verdict);
        // the step grid names it at every decode step too: step 1 first, at the same module
        var first = Assert.IsType<LayerRow>(v.Steps?.FirstDivergence);
        Assert.Equal((1, "model.layers.0.self_attn.o_proj"), (first.Step, first.StepModule));
        for (int step = 1; step < NewTokens; step++)
            Assert.Equal(LayerVerdict.Fail, v.Steps!.Rows.Single(r => r.Step == step && r.StepModule == "model.layers.0.self_attn.o_proj").Verdict);
    }

    [SkippableFact]
    public void A_wrong_rope_base_acting_only_at_decode_steps_on_a_one_token_prompt_is_named_at_step_1_o_proj()
    {
        // one prompt token at position 0, where every RoPE base rotates by angle 0: the prompt's forward is untouched, the
        // bug acts from decode step 1 (position 1) on
        var v = Judge(TinyGgufLlama.Get().GgufWrongRopeBase, ids: [2]);
        Assert.False(v.Passed);
        Assert.True(v.Layers.Passed, v.Layers.ToString());
        var first = Assert.IsType<LayerRow>(v.Steps?.FirstDivergence);
        Assert.Equal((1, "model.layers.0.self_attn.o_proj", 0), (first.Step, first.StepModule, first.Rank));
        Assert.Equal(new StepDivergence(1, "model.layers.0.self_attn.o_proj", 0), v.Record.FirstDivergentStep);   // the report's
        foreach (var m in new[] { "q_proj", "k_proj", "v_proj" })
            Assert.Equal(LayerVerdict.Pass, v.Steps!.Rows.Single(r => r.Step == 1 && r.StepModule == $"model.layers.0.self_attn.{m}").Verdict);
        // the same one-token prompt through the clean GGUF passes every step: the bug, not the short prompt, fails it
        Assert.True(Judge(TinyGgufLlama.Get().Gguf, ids: [2]).Passed);
    }

    [SkippableFact]
    public void Q_and_k_left_in_llama_cpps_rotary_row_order_fail_at_layer_0_q_proj()
    {
        // the map's layout step: convert_hf_to_gguf.py permutes q_proj's and k_proj's rows for llama.cpp's RoPE
        var v = Judge(TinyGgufLlama.Get().Gguf, llamaLayout: true);
        Assert.False(v.Passed);
        Assert.Equal("model.layers.0.self_attn.q_proj", v.Record.FirstBadModule);
        Assert.Equal(LayerVerdict.Fail, v.Layers.Rows.Single(r => r.Module == "model.layers.0.self_attn.k_proj").Verdict);
        Assert.Equal(LayerVerdict.Pass, v.Layers.Rows.Single(r => r.Module == "model.layers.0.self_attn.v_proj").Verdict);
    }
}
