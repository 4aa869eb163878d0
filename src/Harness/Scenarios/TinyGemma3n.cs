using System.Text.Json.Nodes;
using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>
/// The tiny random Gemma3n every gemma3n scenario uses (Gemma3nForConditionalGeneration, vision tower stubbed): 4 layers
/// [sliding, full, sliding, full], the last 2 sharing keys and values (layer 2 reads layer 0, layer 3 reads layer 1),
/// layers 0-1 sparse (gaussian top-k 0.8 and 0.6) and 2-3 dense, per-layer intermediate sizes, AltUp with 3 streams
/// and active stream 1, Laurel rank 4, per-layer inputs of width 8, 4 heads / 2 kv heads of 8, both embedders.
/// Every field the engine reads is off its library default (HF's defaults are E4B's: hidden 2048, 4 AltUp streams,
/// active stream 0, sliding window 512, soft cap 30, rope thetas 1e4/1e6, eps 1e-6, gelu_pytorch_tanh, ...), so an
/// engine that reads a default instead of the field diverges. Three stay at their defaults because the feature needs
/// them: altup_correct_scale (true), tie_word_embeddings (true: the lm_head is the embedding table) and attention_bias
/// (false: Gemma3n has none). About 112 k parameters with the audio tower (0.45 MB in float32).
/// </summary>
public static class TinyGemma3n
{
    public const ulong Seed = 31;
    public const string ModelName = "tiny-gemma3n";
    public const int VisionHidden = 24, VisionSoftTokens = 4, AudioFrames = 32, AudioFeatureSize = 16;

    public static JsonObject Config() => new()
    {
        ["architectures"] = new JsonArray("Gemma3nForConditionalGeneration"),
        ["model_type"] = "gemma3n",
        ["text_config"] = new JsonObject
        {
            ["model_type"] = "gemma3n_text",
            ["vocab_size"] = 272,
            ["vocab_size_per_layer_input"] = 256,
            ["hidden_size"] = 32,
            ["intermediate_size"] = new JsonArray(64, 64, 48, 48),
            ["num_hidden_layers"] = 4,
            ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2,
            ["head_dim"] = 8,
            ["layer_types"] = new JsonArray("sliding_attention", "full_attention", "sliding_attention", "full_attention"),
            ["sliding_window"] = 3,
            ["num_kv_shared_layers"] = 2,
            ["hidden_size_per_layer_input"] = 8,
            ["laurel_rank"] = 4,
            ["altup_num_inputs"] = 3,
            ["altup_active_idx"] = 1,
            ["altup_correct_scale"] = true,
            ["activation_sparsity_pattern"] = new JsonArray(0.8, 0.6, 0.0, 0.0),
            ["max_position_embeddings"] = 96,
            ["rms_norm_eps"] = 2e-6,
            ["hidden_activation"] = "silu",
            ["final_logit_softcapping"] = 7.5,
            ["rope_parameters"] = new JsonObject
            {
                ["sliding_attention"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 500.0 },
                ["full_attention"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 20000.0 },
            },
            ["pad_token_id"] = 0,
            ["bos_token_id"] = 2,
            ["eos_token_id"] = 1,
        },
        ["vision_config"] = new JsonObject
        {
            ["hidden_size"] = VisionHidden, ["vocab_size"] = 8, ["vocab_offset"] = 256, ["rms_norm_eps"] = 4e-6,
        },
        ["audio_config"] = new JsonObject
        {
            ["hidden_size"] = 32, ["vocab_size"] = 8, ["vocab_offset"] = 264, ["rms_norm_eps"] = 5e-6,
            ["input_feat_size"] = AudioFeatureSize, ["conf_num_attention_heads"] = 2, ["conf_num_hidden_layers"] = 2,
            ["conf_attention_chunk_size"] = 4, ["conf_attention_context_left"] = 5, ["conf_attention_context_right"] = 0,
            ["sscp_conv_channel_size"] = new JsonArray(8, 4), ["conf_reduction_factor"] = 4,
        },
        ["vision_soft_tokens_per_image"] = VisionSoftTokens,
        ["audio_soft_tokens_per_image"] = 3,   // the tower gives 2 for 32 frames: one padding token
        ["boi_token_id"] = 250, ["eoi_token_id"] = 251, ["image_token_id"] = 257,
        ["boa_token_id"] = 252, ["eoa_token_id"] = 253, ["audio_token_id"] = 265,
    };

    /// <summary>
    /// The prompts: text (6 ids below vocab_size_per_layer_input); hard tokens (vision ids 259 and 262, audio id 268:
    /// their per-layer inputs come from id 0); soft tokens (4 image and 3 audio placeholders between their markers).
    /// </summary>
    public static long[] Prompt(Gemma3nInput input) => input switch
    {
        Gemma3nInput.Text => [2, 17, 140, 33, 201, 96],
        Gemma3nInput.HardTokens => [2, 17, 259, 268, 33, 262],
        _ => [2, 250, 257, 257, 257, 257, 251, 252, 265, 265, 265, 253],
    };

    /// <summary>The stub vision tower's output [1, C, 2, 2] (h*w = vision_soft_tokens_per_image), seeded.</summary>
    public static Tensor VisionTowerOutput(DType dtype) => Tensor.Normal(dtype, 401, 0, 1, 1, VisionHidden, 2, 2);

    /// <summary>Log-mel-like audio features [1, frames, input_feat_size], seeded.</summary>
    public static Tensor AudioFeatures(DType dtype) => Tensor.Normal(dtype, 402, 0, 1, 1, AudioFrames, AudioFeatureSize);
}
