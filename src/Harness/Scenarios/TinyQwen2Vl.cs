using System.Text.Json.Nodes;
using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>
/// The tiny random Qwen2-VL every qwen2-vl scenario uses. Every field the engine reads is off the library default:
/// text hidden 64 (4 heads of 16, divisible by TP=4; 2 kv heads, replicated at TP=4), intermediate 96, 2 layers,
/// vocab 300 (not a multiple of 64*tp: vocab padding is exercised), rms_norm_eps 3e-6, rope_theta 5e4, mrope_section
/// [4, 2, 2] (unequal, so a swapped stream shows), tied embeddings; vision depth 2, embed_dim 32 with 4 heads of 8,
/// mlp_ratio 2, patch_size 4, temporal_patch_size 1 (a 2-frame video is 2 temporal patches: 2 attention segments),
/// spatial_merge_size 3 (the merger folds 3x3 blocks). initializer_range 0.125 keeps activations near unit scale.
/// </summary>
public static class TinyQwen2Vl
{
    public const ulong Seed = 4321;
    public const string ModelName = "tiny-qwen2-vl";
    public const int ImageToken = 290, VideoToken = 291, VisionStart = 292, VisionEnd = 293, Vocab = 300;
    public const int Patch = 4, Merge = 3, TemporalPatch = 1, Layers = 2, VisionDepth = 2;

    public static JsonObject Config() => new()
    {
        ["architectures"] = new JsonArray("Qwen2VLForConditionalGeneration"),
        ["model_type"] = "qwen2_vl",
        ["text_config"] = new JsonObject
        {
            ["vocab_size"] = Vocab,
            ["hidden_size"] = 64,
            ["intermediate_size"] = 96,
            ["num_hidden_layers"] = Layers,
            ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2,
            ["max_position_embeddings"] = 256,
            ["rms_norm_eps"] = 3e-6,
            ["initializer_range"] = 0.125,
            ["hidden_act"] = "silu",
            ["bos_token_id"] = 1,
            ["eos_token_id"] = 2,
            ["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 50000.0, ["mrope_section"] = new JsonArray(4, 2, 2) },
        },
        ["vision_config"] = new JsonObject
        {
            ["depth"] = VisionDepth,
            ["embed_dim"] = 32,
            ["hidden_size"] = 64,
            ["num_heads"] = 4,
            ["mlp_ratio"] = 2,
            ["patch_size"] = Patch,
            ["temporal_patch_size"] = TemporalPatch,
            ["spatial_merge_size"] = Merge,
            ["in_channels"] = 3,
            ["hidden_act"] = "quick_gelu",
            ["initializer_range"] = 0.125,
        },
        ["image_token_id"] = ImageToken,
        ["video_token_id"] = VideoToken,
        ["vision_start_token_id"] = VisionStart,
        ["vision_end_token_id"] = VisionEnd,
        ["tie_word_embeddings"] = true,
    };

    /// <summary>The HF module paths compared, in forward order: the vision tower (when pixels go in), then the decoder.</summary>
    public static IReadOnlyList<string> Modules(bool vision, int layers = Layers, int visionDepth = VisionDepth)
    {
        var list = new List<string>();
        if (vision)
        {
            list.Add("model.visual.patch_embed");
            for (int i = 0; i < visionDepth; i++)
            {
                string b = $"model.visual.blocks.{i}";
                list.AddRange([$"{b}.attn", $"{b}.mlp", b]);
            }
            list.Add("model.visual.merger");
        }
        list.Add("model.language_model.embed_tokens");
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.language_model.layers.{i}";
            list.AddRange([$"{p}.input_layernorm", $"{p}.self_attn", $"{p}.post_attention_layernorm", $"{p}.mlp", p]);
        }
        list.AddRange(["model.language_model.norm", "lm_head"]);
        return list;
    }

    /// <summary>A seeded synthetic RGB picture [H, W, 3] of 0..255 values (int64): a gradient plus noise.</summary>
    public static Tensor Picture(ulong seed, int height, int width, int frames = 0)
    {
        var rng = new SplitMix64(seed);
        int n = Math.Max(frames, 1) * height * width * 3;
        var data = new long[n];
        for (int i = 0; i < n; i++)
        {
            int c = i % 3, x = i / 3 % width, y = i / 3 / width % height;
            data[i] = Math.Clamp((c + 1) * 40 * (x + y) / (width + height) + rng.NextInt(120), 0, 255);
        }
        return frames == 0 ? Tensor.FromArray(data, height, width, 3) : Tensor.FromArray(data, frames, height, width, 3);
    }
}
