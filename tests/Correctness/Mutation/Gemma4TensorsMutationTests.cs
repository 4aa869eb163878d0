using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Every tensor Gemma4Tensors declares for a config, with its shape and the config fields the shape comes from (the
/// text a CheckpointValidator problem quotes), in both checkpoint layouts. The recorded tiny checkpoints fitting their
/// configs (Gemma3nGemma4TensorsTests) cannot see a hint emptied or a bias declared where none is loaded, so these
/// Stryker.NET mutants of src/Engine/Models/Gemma4/Gemma4Tensors.cs survived the catalog (notes/issue-21-mutgemma4.md).
/// </summary>
public class Gemma4TensorsMutationTests
{
    private static Gemma4TextConfig From(JsonObject json, string source = "g4/config.json") =>
        Gemma4TextConfig.From(HfConfig.Parse(json.ToJsonString(), source));

    private static string[] Listing(ModelTensors m) =>
        m.Tensors.Select(t => $"{t.Name} {Shape.Format(t.Shape)} ({t.ShapeFrom}){(t.Optional ? " optional" : "")}").ToArray();

    [Fact]
    public void The_moe_model_declares_biases_the_router_and_experts_and_no_v_proj_on_its_k_eq_v_full_layer()
    {
        var m = Gemma4Tensors.Expected(From(TinyGemma4.Config("moe")));
        Assert.Equal(("Gemma4", "g4/config.json"), (m.ModelName, m.ConfigSource));
        Assert.Equal([".rotary_emb.inv_freq"], m.IgnoredSuffixes);
        Assert.Null(m.IgnoredPrefixes);
        string[] layer0 =
        [
            "model.layers.0.input_layernorm.weight [64] (hidden_size)",
            "model.layers.0.post_attention_layernorm.weight [64] (hidden_size)",
            "model.layers.0.pre_feedforward_layernorm.weight [64] (hidden_size)",
            "model.layers.0.post_feedforward_layernorm.weight [64] (hidden_size)",
            "model.layers.0.layer_scalar [1] (one scalar)",
            "model.layers.0.self_attn.q_proj.weight [32, 64] (num_attention_heads * head_dim, hidden_size)",
            "model.layers.0.self_attn.q_proj.bias [32] (num_attention_heads * head_dim (attention_bias))",
            "model.layers.0.self_attn.q_norm.weight [16] (head_dim)",
            "model.layers.0.self_attn.k_proj.weight [16, 64] (num_key_value_heads * head_dim, hidden_size)",
            "model.layers.0.self_attn.k_proj.bias [16] (num_key_value_heads * head_dim (attention_bias))",
            "model.layers.0.self_attn.v_proj.weight [16, 64] (num_key_value_heads * head_dim, hidden_size)",
            "model.layers.0.self_attn.v_proj.bias [16] (num_key_value_heads * head_dim (attention_bias))",
            "model.layers.0.self_attn.k_norm.weight [16] (head_dim)",
            "model.layers.0.self_attn.o_proj.weight [64, 32] (hidden_size, num_attention_heads * head_dim)",
            "model.layers.0.self_attn.o_proj.bias [64] (hidden_size (attention_bias))",
            "model.layers.0.mlp.gate_proj.weight [96, 64] (intermediate_size, hidden_size)",
            "model.layers.0.mlp.up_proj.weight [96, 64] (intermediate_size, hidden_size)",
            "model.layers.0.mlp.down_proj.weight [64, 96] (hidden_size, intermediate_size)",
            "model.layers.0.router.scale [64] (hidden_size)",
            "model.layers.0.router.per_expert_scale [4] (num_experts)",
            "model.layers.0.router.proj.weight [4, 64] (num_experts, hidden_size)",
            "model.layers.0.experts.gate_up_proj [4, 64, 64] (num_experts, 2 * moe_intermediate_size, hidden_size)",
            "model.layers.0.experts.down_proj [4, 64, 32] (num_experts, hidden_size, moe_intermediate_size)",
            "model.layers.0.post_feedforward_layernorm_1.weight [64] (hidden_size)",
            "model.layers.0.post_feedforward_layernorm_2.weight [64] (hidden_size)",
            "model.layers.0.pre_feedforward_layernorm_2.weight [64] (hidden_size)",
        ];
        string[] layer1 =   // full, k=v: global_head_dim 32, num_global_key_value_heads 2, no v_proj
        [
            "model.layers.1.input_layernorm.weight [64] (hidden_size)",
            "model.layers.1.post_attention_layernorm.weight [64] (hidden_size)",
            "model.layers.1.pre_feedforward_layernorm.weight [64] (hidden_size)",
            "model.layers.1.post_feedforward_layernorm.weight [64] (hidden_size)",
            "model.layers.1.layer_scalar [1] (one scalar)",
            "model.layers.1.self_attn.q_proj.weight [64, 64] (num_attention_heads * global_head_dim, hidden_size)",
            "model.layers.1.self_attn.q_proj.bias [64] (num_attention_heads * global_head_dim (attention_bias))",
            "model.layers.1.self_attn.q_norm.weight [32] (global_head_dim)",
            "model.layers.1.self_attn.k_proj.weight [64, 64] (num_global_key_value_heads * global_head_dim, hidden_size)",
            "model.layers.1.self_attn.k_proj.bias [64] (num_global_key_value_heads * global_head_dim (attention_bias))",
            "model.layers.1.self_attn.k_norm.weight [32] (global_head_dim)",
            "model.layers.1.self_attn.o_proj.weight [64, 64] (hidden_size, num_attention_heads * global_head_dim)",
            "model.layers.1.self_attn.o_proj.bias [64] (hidden_size (attention_bias))",
            "model.layers.1.mlp.gate_proj.weight [96, 64] (intermediate_size, hidden_size)",
            "model.layers.1.mlp.up_proj.weight [96, 64] (intermediate_size, hidden_size)",
            "model.layers.1.mlp.down_proj.weight [64, 96] (hidden_size, intermediate_size)",
            "model.layers.1.router.scale [64] (hidden_size)",
            "model.layers.1.router.per_expert_scale [4] (num_experts)",
            "model.layers.1.router.proj.weight [4, 64] (num_experts, hidden_size)",
            "model.layers.1.experts.gate_up_proj [4, 64, 64] (num_experts, 2 * moe_intermediate_size, hidden_size)",
            "model.layers.1.experts.down_proj [4, 64, 32] (num_experts, hidden_size, moe_intermediate_size)",
            "model.layers.1.post_feedforward_layernorm_1.weight [64] (hidden_size)",
            "model.layers.1.post_feedforward_layernorm_2.weight [64] (hidden_size)",
            "model.layers.1.pre_feedforward_layernorm_2.weight [64] (hidden_size)",
        ];
        Assert.Equal(
        [
            "model.embed_tokens.weight [384, 64] (vocab_size, hidden_size)",
            .. layer0, .. layer1,
            "model.norm.weight [64] (hidden_size)",
            "lm_head.weight [384, 64] (vocab_size, hidden_size) optional",
        ], Listing(m));
    }

    [Fact]
    public void The_e2b_like_model_declares_per_layer_inputs_and_no_k_or_v_on_its_kv_shared_double_wide_layers()
    {
        var json = TinyGemma4.Config("e2b-like");
        json["tie_word_embeddings"] = false;                    // lm_head then required
        var listing = Listing(Gemma4Tensors.Expected(From(json)));
        string[] head =
        [
            "model.embed_tokens.weight [320, 64] (vocab_size, hidden_size)",
            "model.embed_tokens_per_layer.weight [384, 32] (vocab_size_per_layer_input, num_hidden_layers * hidden_size_per_layer_input)",
            "model.per_layer_model_projection.weight [32, 64] (num_hidden_layers * hidden_size_per_layer_input, hidden_size)",
            "model.per_layer_projection_norm.weight [8] (hidden_size_per_layer_input)",
        ];
        Assert.Equal(head, listing[..4]);
        string[] layer3 =   // full, KV-shared (no k_proj, v_proj, k_norm), double-wide MLP, per-layer input gate
        [
            "model.layers.3.input_layernorm.weight [64] (hidden_size)",
            "model.layers.3.post_attention_layernorm.weight [64] (hidden_size)",
            "model.layers.3.pre_feedforward_layernorm.weight [64] (hidden_size)",
            "model.layers.3.post_feedforward_layernorm.weight [64] (hidden_size)",
            "model.layers.3.layer_scalar [1] (one scalar)",
            "model.layers.3.self_attn.q_proj.weight [64, 64] (num_attention_heads * global_head_dim, hidden_size)",
            "model.layers.3.self_attn.q_norm.weight [32] (global_head_dim)",
            "model.layers.3.self_attn.o_proj.weight [64, 64] (hidden_size, num_attention_heads * global_head_dim)",
            "model.layers.3.mlp.gate_proj.weight [192, 64] (2 * intermediate_size (use_double_wide_mlp, KV-shared layer), hidden_size)",
            "model.layers.3.mlp.up_proj.weight [192, 64] (2 * intermediate_size (use_double_wide_mlp, KV-shared layer), hidden_size)",
            "model.layers.3.mlp.down_proj.weight [64, 192] (hidden_size, 2 * intermediate_size (use_double_wide_mlp, KV-shared layer))",
            "model.layers.3.per_layer_input_gate.weight [8, 64] (hidden_size_per_layer_input, hidden_size)",
            "model.layers.3.per_layer_projection.weight [64, 8] (hidden_size, hidden_size_per_layer_input)",
            "model.layers.3.post_per_layer_input_norm.weight [64] (hidden_size)",
        ];
        Assert.Equal([.. layer3, "model.norm.weight [64] (hidden_size)", "lm_head.weight [320, 64] (vocab_size, hidden_size)"], listing[^16..]);
        // layer 1: full, not shared, k and v of num_key_value_heads * global_head_dim (no k=v here)
        Assert.Contains("model.layers.1.self_attn.v_proj.weight [32, 64] (num_key_value_heads * global_head_dim, hidden_size)", listing);
        Assert.Contains("model.layers.1.mlp.down_proj.weight [64, 96] (hidden_size, intermediate_size)", listing);
        Assert.DoesNotContain(listing, t => t.Contains("layers.2.self_attn.k_", StringComparison.Ordinal));
        Assert.DoesNotContain(listing, t => t.Contains(".bias ", StringComparison.Ordinal));
    }

    [Fact]
    public void Under_text_config_the_names_are_the_language_models_and_the_towers_and_embedders_are_ignored()
    {
        var m = Gemma4Tensors.Expected(From(TinyGemma4.MultimodalConfig("moe")));
        Assert.Equal(["model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio."], m.IgnoredPrefixes!);
        var listing = Listing(m);
        Assert.Equal("model.language_model.embed_tokens.weight [384, 64] (vocab_size, hidden_size)", listing[0]);
        Assert.Equal("model.language_model.norm.weight [64] (hidden_size)", listing[^2]);
        Assert.Equal("lm_head.weight [384, 64] (vocab_size, hidden_size) optional", listing[^1]);
        // a config parsed from no file is named config.json in the problems
        Assert.Equal("config.json", Gemma4Tensors.Expected(From(TinyGemma4.Config("moe"), "")).ConfigSource);
    }
}
