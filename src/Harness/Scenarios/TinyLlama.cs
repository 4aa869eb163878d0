using System.Text.Json.Nodes;

namespace Harness.Scenarios;

/// <summary>
/// The tiny random Llama every Llama scenario uses: 4 layers (so PP=2 gets two each), hidden 64, 4 heads with 2 kv
/// heads (GQA; kv heads are replicated at TP=4), vocab 200 (not a multiple of 64*tp, so the vocab padding is
/// exercised), intermediate 128. initializer_range 0.125 (about 1/sqrt(hidden)) keeps activations near unit scale,
/// so relative errors mean something (HF's default 0.02 makes them tiny and lets atol swamp real differences).
/// </summary>
public static class TinyLlama
{
    public const ulong Seed = 1234;
    public const int Hidden = 64;

    /// <summary>The RoPE variants HF's Llama supports that the catalog exercises (rope_parameters.rope_type).</summary>
    public static readonly string[] RopeTypes = ["default", "linear", "llama3"];

    /// <summary>The model name under fixtures/models for a RoPE variant.</summary>
    public static string ModelName(string rope) => rope == "default" ? "tiny-llama" : $"tiny-llama-rope-{rope}";

    /// <summary>
    /// rope_parameters for a variant: linear scales positions by 2; llama3 (factor 8, low/high frequency factors 1
    /// and 4, original context 64) rescales the low frequencies and smooths the band between, at head_dim 16 both
    /// regimes and the band occur.
    /// </summary>
    public static JsonObject Rope(string rope) => rope switch
    {
        "default" => new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 10000.0 },
        "linear" => new JsonObject { ["rope_type"] = "linear", ["rope_theta"] = 10000.0, ["factor"] = 2.0 },
        "llama3" => new JsonObject
        {
            ["rope_type"] = "llama3", ["rope_theta"] = 10000.0, ["factor"] = 8.0, ["low_freq_factor"] = 1.0,
            ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 64,
        },
        _ => throw new ArgumentException($"unknown rope variant '{rope}'; known: {string.Join(", ", RopeTypes)}"),
    };

    public static JsonObject Config(string rope = "default") => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["hidden_size"] = 64,
        ["intermediate_size"] = 128,
        ["num_hidden_layers"] = 4,
        ["num_attention_heads"] = 4,
        ["num_key_value_heads"] = 2,
        ["head_dim"] = 16,
        ["vocab_size"] = 200,
        ["max_position_embeddings"] = 256,
        ["rms_norm_eps"] = 1e-6,
        ["initializer_range"] = 0.125,
        ["tie_word_embeddings"] = false,
        ["hidden_act"] = "silu",
        ["rope_parameters"] = Rope(rope),
        ["bos_token_id"] = 1,
        ["eos_token_id"] = 2,
    };

    /// <summary>The HF module paths compared, in forward order.</summary>
    public static IReadOnlyList<string> Modules(bool withEmbedTokens, int layers = 4)
    {
        var list = new List<string>();
        if (withEmbedTokens) list.Add("model.embed_tokens");
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}";
            list.AddRange([$"{p}.input_layernorm", $"{p}.self_attn", $"{p}.post_attention_layernorm", $"{p}.mlp", p]);
        }
        list.AddRange(["model.norm", "lm_head"]);
        return list;
    }
}
