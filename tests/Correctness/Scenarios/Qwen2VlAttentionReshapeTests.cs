using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Models;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Scenario 3's bug, as reported against Qwen2-VL-7B-Instruct under TP=4: "shape '[1, 359, 3584]' is invalid for input
/// of size 321664". The attention output was viewed as (bsz, q_len, hidden_size), but each of the 4 ranks holds
/// 28/4 = 7 heads of 128, so 359 * 896 = 321664 values. At TP=1 heads * head_dim == hidden_size and the bug hides.
/// </summary>
[Collection(SerialCollection.Name)]
public class Qwen2VlAttentionReshapeTests(ITestOutputHelper output)
{
    private ScenarioResult Run(int tp) =>
        ScenarioRunner.Run(new Qwen2VlScenario(tp, Qwen2VlMedia.Image) with { Fault = Faults.AttentionReshapeHiddenSize }, CatalogContexts.Recorded).Result;

    [Fact]
    public void The_hard_coded_view_is_invisible_at_TP1()
    {
        var result = Run(1);
        output.WriteLine(result.Describe());
        Assert.True(result.ComparisonPassed, "at TP=1 heads * head_dim == hidden_size, so the fault must not show: " + result.Reason);
    }

    [Fact]
    public void Under_TP4_the_tiny_model_fails_in_layer_0_self_attn_naming_both_sizes()
    {
        var result = Run(4);
        output.WriteLine(result.Describe());
        Assert.False(result.ComparisonPassed);
        Assert.Equal("model.language_model.layers.0.self_attn", result.FirstBadModule);
        // 15 prompt tokens, hidden 64, 1 of 4 heads of 16 per rank: 15 * 16 = 240 values.
        Assert.Contains("shape '[1, 15, 64]' is invalid for input of size 240", result.EngineError);
    }

    /// <summary>Qwen2-VL-7B-Instruct's config.json (the fields the engine reads); weights are not needed to build the config.</summary>
    private const string Qwen2Vl7BConfig = """
        {
          "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
          "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
          "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-06, "tie_word_embeddings": false,
          "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "rope_theta": 1000000.0,
          "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
          "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
            "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
        }
        """;

    /// <summary>Seeded uniform values in [-scale, scale): cheap for the 7B-sized matrices (29M values).</summary>
    private static Tensor Uniform(ulong seed, float scale, params int[] shape)
    {
        var rng = new SplitMix64(seed);
        var data = new float[shape.Aggregate(1, (a, b) => a * b)];
        for (int i = 0; i < data.Length; i++) data[i] = (2 * rng.NextFloat() - 1) * scale;
        return Tensor.FromArray(data, shape);
    }

    [Fact]
    public void With_Qwen2_VL_7B_text_dims_and_359_tokens_at_TP4_the_message_is_the_reported_one()
    {
        var config = Qwen2VlConfig.From(HfConfig.Parse(Qwen2Vl7BConfig, "Qwen2-VL-7B-Instruct/config.json"));
        Assert.Equal((3584, 28, 4, 128), (config.Text.HiddenSize, config.Text.NumAttentionHeads, config.Text.NumKeyValueHeads, config.HeadDim));
        // Random weights for the first attention only (q/k/v with bias, o_proj), made here: no checkpoint.
        const string p = "model.language_model.layers.0.self_attn";
        int hidden = 3584, kv = 4 * 128;
        var weights = new DictionaryWeights(new Dictionary<string, Tensor>
        {
            [p + ".q_proj.weight"] = Uniform(1, 0.02f, hidden, hidden),
            [p + ".q_proj.bias"] = Uniform(2, 0.02f, hidden),
            [p + ".k_proj.weight"] = Uniform(3, 0.02f, kv, hidden),
            [p + ".k_proj.bias"] = Uniform(4, 0.02f, kv),
            [p + ".v_proj.weight"] = Uniform(5, 0.02f, kv, hidden),
            [p + ".v_proj.bias"] = Uniform(6, 0.02f, kv),
            [p + ".o_proj.weight"] = Uniform(7, 0.02f, hidden, hidden),
        });
        const int tokens = 359;
        var hiddenStates = Uniform(8, 1f, tokens, hidden);
        var invFreq = Harness.Engine.Ops.Rotary.InvFreq(config.Text.Rope.RopeTheta, config.HeadDim);
        var (cos, sin) = Qwen2VlRope.MultimodalCosSin(invFreq, Qwen2VlRope.Sequential(0, tokens), config.MropeSection, DType.Float32);
        var options = new Qwen2VlOptions { AttentionReshapeHiddenSize = true };

        var errors = new string[4];
        var failure = Assert.ThrowsAny<Exception>(() => ThreadWorld.Run(4, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, 4, 1);
            var attention = new Qwen2VlAttention(weights, p, config, ctx, options);
            var cache = new KvCache(attention.LocalKvHeads, config.HeadDim, tokens, DType.Float32);
            try { attention.Forward(hiddenStates, cos, sin, cache, tokens); }
            catch (ArgumentException e) { errors[rank] = e.Message; throw; }
        }, TimeSpan.FromSeconds(120)));
        output.WriteLine(failure.Message);
        foreach (var message in errors)
            Assert.StartsWith("shape '[1, 359, 3584]' is invalid for input of size 321664", message);
    }
}
