using System.Text.Json.Nodes;

namespace Harness.Scenarios;

/// <summary>
/// The tiny random Llama every Llama scenario uses: 4 layers (so PP=2 gets two each), hidden 64, 4 heads with 2 kv
/// heads (GQA; kv heads are replicated at TP=4), vocab 200 (not a multiple of 64*tp, so the vocab padding is
/// exercised), intermediate 128. initializer_range 0.125 (about 1/sqrt(hidden)) keeps activations near unit scale,
/// so relative errors mean something (HF's default 0.02 makes them tiny and lets atol swamp real differences).
/// Every field the engine reads is off HF's default (and off any value HF derives): head_dim 24 (not 64/4),
/// rms_norm_eps 2e-5, rope_theta 5e4, tied embeddings; the "bias" variant adds attention and MLP biases and tanh GELU
/// (`harness run --config-mutations` proves each field is seen).
/// </summary>
public static class TinyLlama
{
    public const ulong Seed = 1234;
    public const int Hidden = 64;

    /// <summary>
    /// The variants of the tiny model: "default"; "rope-linear" and "rope-llama3" (the rope_parameters.rope_type values HF's
    /// Llama supports that the catalog exercises); "bias" (attention_bias, mlp_bias, hidden_act gelu_pytorch_tanh, untied).
    /// </summary>
    public static readonly string[] Variants = ["default", "rope-linear", "rope-llama3", "bias"];

    /// <summary>The model name under fixtures/models for a variant.</summary>
    public static string ModelName(string variant) => variant == "default" ? "tiny-llama" : $"tiny-llama-{variant}";

    /// <summary>The RoPE type of a variant.</summary>
    public static string RopeOf(string variant) => variant.StartsWith("rope-", StringComparison.Ordinal) ? variant[5..] : "default";

    /// <summary>
    /// rope_parameters for a variant: linear scales positions by 2; llama3 (factor 8, low/high frequency factors 1
    /// and 4, original context 64) rescales the low frequencies and smooths the band between, at head_dim 16 both
    /// regimes and the band occur.
    /// </summary>
    public static JsonObject Rope(string rope) => rope switch
    {
        "default" => new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 50000.0 },
        "linear" => new JsonObject { ["rope_type"] = "linear", ["rope_theta"] = 50000.0, ["factor"] = 2.0 },
        "llama3" => new JsonObject
        {
            ["rope_type"] = "llama3", ["rope_theta"] = 50000.0, ["factor"] = 8.0, ["low_freq_factor"] = 1.5,
            ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 64,
        },
        _ => throw new ArgumentException($"unknown rope type '{rope}'; known: default, linear, llama3"),
    };

    public static JsonObject Config(string variant = "default")
    {
        if (!Variants.Contains(variant)) throw new ArgumentException($"unknown tiny Llama variant '{variant}'; known: {string.Join(", ", Variants)}");
        bool bias = variant == "bias";
        return new()
        {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["hidden_size"] = 64,
        ["intermediate_size"] = 128,
        ["num_hidden_layers"] = 4,
        ["num_attention_heads"] = 4,
        ["num_key_value_heads"] = 2,
        ["head_dim"] = 24,
        ["vocab_size"] = 200,
        ["max_position_embeddings"] = 256,
        ["rms_norm_eps"] = 2e-5,
        ["initializer_range"] = 0.125,
        ["tie_word_embeddings"] = !bias,
        ["attention_bias"] = bias,
        ["mlp_bias"] = bias,
        ["hidden_act"] = bias ? "gelu_pytorch_tanh" : "silu",
        ["rope_parameters"] = Rope(RopeOf(variant)),
        ["bos_token_id"] = 1,
        ["eos_token_id"] = 2,
        };
    }

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
