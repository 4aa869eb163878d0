using System.Text.Json.Nodes;

namespace Harness.Scenarios;

/// <summary>
/// The tiny random Gemma4 text decoders (Gemma4ForCausalLM) of the gemma4 scenarios, in two shapes, every field the
/// engine reads set off HF's default (hidden_activation stays gelu_pytorch_tanh: it is the bug's subject):
/// <list type="bullet">
/// <item><b>e2b-like</b>: 4 layers sliding/full/sliding/full, per-layer inputs (P=8, their own vocab 384 over the main 320), the last two layers
/// KV-shared (double-wide MLP), sliding window 3 (shorter than the 6-token prompt), softcap 20.5.</item>
/// <item><b>moe</b>: 2 layers, the MoE block on (4 experts, top-2, moe_intermediate 32), k=v full layers with 2 global kv
/// heads, attention biases, softcap 25.5.</item>
/// </list>
/// Both: hidden 64, 2 heads, head_dim 16, global_head_dim 32; proportional RoPE on full layers with
/// partial_rotary_factor 0.5 and factor 2. The worker's gemma4_build moves every ones-initialised scale (norm weights,
/// router scale, per-expert scale, layer_scalar) and every zero bias off its initial value.
/// </summary>
public static class TinyGemma4
{
    public const ulong Seed = 4242;
    public static readonly string[] Shapes = ["e2b-like", "moe"];

    public static string ModelName(string shape) => $"tiny-gemma4-{shape}";

    public static JsonObject Config(string shape)
    {
        var c = new JsonObject
        {
            ["architectures"] = new JsonArray("Gemma4ForCausalLM"),
            ["model_type"] = "gemma4_text",
            ["vocab_size"] = 384,
            ["hidden_size"] = 64,
            ["intermediate_size"] = 96,
            ["num_attention_heads"] = 2,
            ["num_key_value_heads"] = 1,
            ["head_dim"] = 16,
            ["global_head_dim"] = 32,
            ["hidden_activation"] = "gelu_pytorch_tanh",
            ["max_position_embeddings"] = 256,
            ["initializer_range"] = 0.1,
            ["rms_norm_eps"] = 1e-5,
            ["pad_token_id"] = 3,
            ["bos_token_id"] = 4,
            ["eos_token_id"] = 5,
            ["tie_word_embeddings"] = true,
            ["sliding_window"] = 3,
            ["rope_parameters"] = new JsonObject
            {
                ["sliding_attention"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 5000.0 },
                ["full_attention"] = new JsonObject
                {
                    ["rope_type"] = "proportional", ["partial_rotary_factor"] = 0.5, ["rope_theta"] = 20000.0, ["factor"] = 2.0,
                },
            },
        };
        if (shape == "e2b-like")
        {
            c["vocab_size"] = 320;                                  // below vocab_size_per_layer_input: every id has a PLE row
            c["num_hidden_layers"] = 4;
            c["layer_types"] = new JsonArray("sliding_attention", "full_attention", "sliding_attention", "full_attention");
            c["vocab_size_per_layer_input"] = 384;
            c["hidden_size_per_layer_input"] = 8;
            c["num_kv_shared_layers"] = 2;
            c["use_double_wide_mlp"] = true;
            c["final_logit_softcapping"] = 20.5;
        }
        else if (shape == "moe")
        {
            c["num_hidden_layers"] = 2;
            c["layer_types"] = new JsonArray("sliding_attention", "full_attention");
            c["hidden_size_per_layer_input"] = 0;
            c["vocab_size_per_layer_input"] = 384;
            c["enable_moe_block"] = true;
            c["num_experts"] = 4;
            c["top_k_experts"] = 2;
            c["moe_intermediate_size"] = 32;
            c["attention_k_eq_v"] = true;
            c["num_global_key_value_heads"] = 2;
            c["attention_bias"] = true;
            c["final_logit_softcapping"] = 25.5;
        }
        else throw new ArgumentException($"unknown tiny Gemma4 shape '{shape}'; known: {string.Join(", ", Shapes)}");
        return c;
    }

    /// <summary>Placeholder and boundary token ids of the multimodal model (inside the e2b-like vocab of 320).</summary>
    public const int ImageTokenId = 300, AudioTokenId = 301, VideoTokenId = 302, BoiTokenId = 303, EoiTokenId = 304, BoaTokenId = 305, EoaTokenId = 306;

    /// <summary>
    /// Gemma4ForConditionalGeneration around a decoder (e2b-like: vision and audio; moe: vision only, standardized, with
    /// use_bidirectional_attention="vision"), with a vision tower (2 layers, hidden 32, patch 4,
    /// pooling 3: a 6x6 patch grid gives 4 soft tokens) and an audio tower (2 conformer layers, hidden 32, output 48:
    /// 32 mel frames of 16 bins give 8 soft tokens). The towers run in the reference and their outputs are handed to the
    /// engine; the embedders' norms read the towers' rms_norm_eps, set off the default.
    /// </summary>
    public static JsonObject MultimodalConfig(string shape = "e2b-like")
    {
        var text = Config(shape);
        text.Remove("architectures");
        text["model_type"] = "gemma4_text";
        if (shape == "moe") text["use_bidirectional_attention"] = "vision";   // 26B-A4B-like: image tokens see each other
        var c = new JsonObject
        {
            ["architectures"] = new JsonArray("Gemma4ForConditionalGeneration"),
            ["model_type"] = "gemma4",
            ["text_config"] = text,
            ["vision_config"] = new JsonObject
            {
                ["model_type"] = "gemma4_vision", ["hidden_size"] = 32, ["intermediate_size"] = 64, ["num_hidden_layers"] = 2,
                ["num_attention_heads"] = 2, ["num_key_value_heads"] = 2, ["head_dim"] = 16, ["patch_size"] = 4,
                ["position_embedding_size"] = 64, ["pooling_kernel_size"] = 3, ["rms_norm_eps"] = 2e-6,
            },
            ["audio_config"] = new JsonObject
            {
                ["model_type"] = "gemma4_audio", ["hidden_size"] = 32, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 2,
                ["subsampling_conv_channels"] = new JsonArray(16, 4), ["output_proj_dims"] = 48, ["attention_chunk_size"] = 4,
                ["attention_context_left"] = 5, ["attention_context_right"] = 0, ["rms_norm_eps"] = 3e-6,
            },
            ["image_token_id"] = ImageTokenId, ["audio_token_id"] = AudioTokenId, ["video_token_id"] = VideoTokenId,
            ["boi_token_id"] = BoiTokenId, ["eoi_token_id"] = EoiTokenId, ["boa_token_id"] = BoaTokenId, ["eoa_token_index"] = EoaTokenId,
            ["tie_word_embeddings"] = true,
        };
        if (shape == "moe")
        {   // vision only, standardized (std_bias / std_scale buffers)
            c.Remove("audio_config");
            c["vision_config"]!["standardize"] = true;
        }
        return c;
    }

    /// <summary>HF module paths compared, in forward order, for a model of this config (prefix "model." or "model.language_model.").</summary>
    public static IReadOnlyList<string> Modules(Engine.Models.Gemma4.Gemma4TextConfig config, string prefix = "model.")
    {
        var list = new List<string> { prefix + "embed_tokens" };
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            string p = $"{prefix}layers.{i}";
            list.AddRange([$"{p}.input_layernorm", $"{p}.self_attn", $"{p}.post_attention_layernorm", $"{p}.pre_feedforward_layernorm", $"{p}.mlp"]);
            if (config.EnableMoeBlock)
                list.AddRange([$"{p}.post_feedforward_layernorm_1", $"{p}.router", $"{p}.pre_feedforward_layernorm_2", $"{p}.experts",
                    $"{p}.post_feedforward_layernorm_2"]);
            list.Add($"{p}.post_feedforward_layernorm");
            if (config.HiddenSizePerLayerInput > 0) list.AddRange([$"{p}.per_layer_projection", $"{p}.post_per_layer_input_norm"]);
            list.Add(p);
        }
        list.AddRange([prefix + "norm", "lm_head"]);
        return list;
    }
}
