using Harness.Judge;
using Harness.Runs;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// llama.cpp judged module by module: the tiny Llama's GGUF (converted by the packaged converter) run through libllama
/// with its graph evaluation callback (llamacpp_dump.py), its named graph outputs mapped to HF's modules and judged by
/// `harness judge --dump`'s oracle verdict. The clean GGUF passes every mapped module; a wrong RMSNorm epsilon in its
/// metadata fails at layer 0's input_layernorm, a wrong RoPE base at layer 0's o_proj (RoPE acts on Q and K after their
/// projections, inside attention, where HF has no module), and Q and K left in llama.cpp's rotary row order (the
/// converter's permutation not undone) at layer 0's q_proj.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class LlamaCppJudgeTests(ITestOutputHelper output)
{
    private static readonly long[] Ids = [2, 100, 200, 300, 17, 250, 9];

    private DumpVerdict Judge(string gguf, bool llamaLayout = false)
    {
        var model = TinyGgufLlama.Get();
        var client = LiveReference.Client();
        var written = LlamaCppDump.Write(client, gguf, Ids, llamaLayout: llamaLayout);
        output.WriteLine($"llama.cpp {written.Description}: {written.Entries} entries; unmapped {string.Join(", ", written.Unmapped.Distinct())}");
        try
        {
            var verdict = DumpJudge.Run(written.Directory, model.ModelDirectory, client);
            output.WriteLine(DumpJudge.Describe(verdict));
            return verdict;
        }
        finally
        {
            client.Release(written.Directory);
        }
    }

    [SkippableFact]
    public void The_converted_gguf_passes_module_by_module_through_libllamas_eval_callback()
    {
        var v = Judge(TinyGgufLlama.Get().Gguf);
        Assert.True(v.Passed, DumpJudge.Describe(v));
        // every module of the map for both layers, judged by the oracle (q_proj and k_proj after undoing the rotary permutation)
        string[] perLayer = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "self_attn",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp"];
        var expected = new[] { "model.embed_tokens", "model.norm", "lm_head", "model.layers.0", "model.layers.1" }
            .Concat(perLayer.SelectMany(m => new[] { $"model.layers.0.{m}", $"model.layers.1.{m}" }));
        foreach (var m in expected)
        {
            var row = Assert.Single(v.Layers.Rows, r => r.Module == m);
            Assert.Equal(LayerVerdict.Pass, row.Verdict);
            Assert.NotNull(row.Result?.Oracle);
        }
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
    public void A_wrong_rope_base_in_the_gguf_fails_at_layer_0_o_proj_after_the_q_k_v_projections_pass()
    {
        var v = Judge(TinyGgufLlama.Get().GgufWrongRopeBase);
        Assert.False(v.Passed);
        Assert.Equal("model.layers.0.self_attn.o_proj", v.Record.FirstBadModule);
        foreach (var m in new[] { "q_proj", "k_proj", "v_proj" })
            Assert.Equal(LayerVerdict.Pass, v.Layers.Rows.Single(r => r.Module == $"model.layers.0.self_attn.{m}").Verdict);
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
