using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Models.Gemma4;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma4's config as the engine reads it, at its edges: the defaults of an absent field (transformers 5.12.1's
/// Gemma4TextConfig), every field read from its own key in both layouts (gemma4_text, gemma4's text_config), the
/// full-layer overrides of transformers >= 5.17 (per_layer_config), HF's layer rules (the last layer full, KV sharing
/// `layer_idx >= first_kv_shared_layer_idx >= 0`, double-wide MLPs `>= first > 0`) and every refusal with the file and
/// field it names. The offline catalog builds its models from two valid configs with every field written, so these
/// Stryker.NET mutants of src/Engine/Models/Gemma4/Gemma4TextConfig.cs survived it (notes/issue-21-mutgemma4.md); each
/// test is the bug report of one.
/// </summary>
public class Gemma4ConfigMutationTests
{
    private const string Source = "g4/config.json";

    private static Gemma4TextConfig From(JsonObject json) => Gemma4TextConfig.From(HfConfig.Parse(json.ToJsonString(), Source));

    private static JsonObject Json(string shape = "e2b-like", Action<JsonObject>? edit = null)
    {
        var json = TinyGemma4.Config(shape);
        edit?.Invoke(json);
        return json;
    }

    private static string Refusal(JsonObject json) => Assert.Throws<ConfigException>(() => From(json)).Message;

    /// <summary>The least a config must say (HfConfig's generic check needs these five), off every default.</summary>
    private static JsonObject Minimal(int layers) => new()
    {
        ["model_type"] = "gemma4_text", ["vocab_size"] = 100, ["hidden_size"] = 64, ["intermediate_size"] = 96,
        ["num_hidden_layers"] = layers, ["num_attention_heads"] = 8,
    };

    [Fact]
    public void A_config_that_leaves_a_field_out_takes_the_default_of_transformers_gemma4_text_config()
    {
        var c = From(Minimal(7));
        Assert.Equal((100, 64, 96, 7, 8), (c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads));
        Assert.Equal(4, c.NumKeyValueHeads);
        Assert.Equal(256, c.HeadDim);
        Assert.Equal(512, c.GlobalHeadDim);                     // no global_head_dim nor per_layer_config: HF's 512 (it read head_dim)
        Assert.Null(c.NumGlobalKeyValueHeads);
        Assert.False(c.AttentionKEqV);
        Assert.False(c.AttentionBias);
        Assert.Equal("gelu_pytorch_tanh", c.HiddenActivation);
        Assert.Equal(1e-6, c.RmsNormEps);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal(512, c.SlidingWindow);
        Assert.Null(c.FinalLogitSoftcapping);
        Assert.Null(c.UseBidirectionalAttention);
        Assert.Equal(262_144, c.VocabSizePerLayerInput);
        Assert.Equal(256, c.HiddenSizePerLayerInput);
        Assert.Equal(0, c.NumKvSharedLayers);
        Assert.False(c.UseDoubleWideMlp);
        Assert.False(c.EnableMoeBlock);
        Assert.Equal((0, 0, 0), (c.NumExperts, c.TopKExperts, c.MoeIntermediateSize));
        Assert.Equal(0, c.PadTokenId);
        Assert.Null(c.MaxPositionEmbeddings);
        Assert.Empty(c.MultimodalTokenIds);
        // layer_types: sliding_window_pattern 6 ("sliding" unless (i + 1) % 6 == 0); the 7th layer, sliding by the
        // pattern, forced to full as HF forces the last layer
        Assert.Equal(["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
            "full_attention", "full_attention"], c.LayerTypes);
        Assert.True(c.IsSliding(0));
        Assert.False(c.IsSliding(5));
        // rope_parameters absent: default RoPE theta 1e4 on sliding layers, proportional 0.25 theta 1e6 on full ones
        Assert.Equal(new Gemma4Rope("default", 10_000, 1.0, 1.0), c.Rope["sliding_attention"]);
        Assert.Equal(new Gemma4Rope("proportional", 1_000_000, 0.25, 1.0), c.Rope["full_attention"]);
        // 12 layers: the pattern's own full layers at 6 and 12
        var twelve = From(Minimal(12)).LayerTypes;
        Assert.Equal([5, 11], Enumerable.Range(0, 12).Where(i => twelve[i] == "full_attention").ToArray());
    }

    [Fact]
    public void Written_layer_types_that_end_on_a_sliding_layer_end_on_a_full_one()
    {
        var c = From(Json("e2b-like", j => j["layer_types"] = new JsonArray("full_attention", "sliding_attention", "full_attention", "sliding_attention")));
        Assert.Equal(["full_attention", "sliding_attention", "full_attention", "full_attention"], c.LayerTypes);
    }

    [Fact]
    public void Every_field_the_engine_reads_comes_from_its_own_key_in_gemma4_text()
    {
        var c = From(Json("moe", j =>
        {
            j["max_position_embeddings"] = 77;
            j["pad_token_id"] = 9;                             // gemma4_text: only nn.Embedding's padding_idx, never read
            j["image_token_id"] = 300;                         // gemma4_text has no placeholders: never read
            j["use_bidirectional_attention"] = "vision";
            j["hidden_size_per_layer_input"] = 8;
            j["vocab_size_per_layer_input"] = 500;
            j["num_kv_shared_layers"] = 1;
            j["use_double_wide_mlp"] = true;
            j["rope_parameters"]!["sliding_attention"]!["partial_rotary_factor"] = 0.75;
            j["rope_parameters"]!["sliding_attention"]!["factor"] = 3.0;
        }));
        Assert.Equal((384, 64, 96, 2, 2, 1, 16, 32), (c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers,
            c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.GlobalHeadDim));
        Assert.Equal(2, c.NumGlobalKeyValueHeads);
        Assert.True(c.AttentionKEqV);
        Assert.True(c.AttentionBias);
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(3, c.SlidingWindow);
        Assert.Equal(25.5, c.FinalLogitSoftcapping);
        Assert.Equal("vision", c.UseBidirectionalAttention);
        Assert.Equal((500, 8, 1), (c.VocabSizePerLayerInput, c.HiddenSizePerLayerInput, c.NumKvSharedLayers));
        Assert.True(c.UseDoubleWideMlp);
        Assert.True(c.EnableMoeBlock);
        Assert.Equal((4, 2, 32), (c.NumExperts, c.TopKExperts, c.MoeIntermediateSize));
        Assert.Equal(77, c.MaxPositionEmbeddings);
        Assert.Equal(0, c.PadTokenId);
        Assert.Empty(c.MultimodalTokenIds);
        Assert.Empty(c.VisionTokenIds);
        Assert.Equal(new Gemma4Rope("default", 5000, 0.75, 3.0), c.Rope["sliding_attention"]);
        Assert.Equal(new Gemma4Rope("proportional", 20000, 0.5, 2.0), c.Rope["full_attention"]);
        Assert.False(From(Json("moe", j => j["tie_word_embeddings"] = false)).TieWordEmbeddings);
        Assert.Equal("gelu", From(Json("moe", j => j["hidden_activation"] = "gelu")).HiddenActivation);
    }

    [Fact]
    public void Under_text_config_the_text_fields_come_from_it_and_the_placeholders_and_tie_from_the_top()
    {
        var json = TinyGemma4.MultimodalConfig("moe");
        json["text_config"]!["pad_token_id"] = 7;
        json["text_config"]!.AsObject().Remove("tie_word_embeddings");
        json["tie_word_embeddings"] = false;                   // the top level's, when text_config does not say
        var c = From(json);
        Assert.Equal("text_config.", c.Path);
        Assert.Equal(64, c.HiddenSize);
        Assert.Equal(7, c.PadTokenId);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal([TinyGemma4.ImageTokenId, TinyGemma4.VideoTokenId, TinyGemma4.AudioTokenId], c.MultimodalTokenIds);
        Assert.Equal([TinyGemma4.ImageTokenId, TinyGemma4.VideoTokenId], c.VisionTokenIds);
        Assert.Equal("vision", c.UseBidirectionalAttention);
        json["text_config"]!.AsObject().Remove("pad_token_id");
        Assert.Equal(0, From(json).PadTokenId);                // text_config.pad_token_id's default
        json["text_config"]!["tie_word_embeddings"] = true;    // text_config's own, when it says, over the top level's
        Assert.True(From(json).TieWordEmbeddings);
        json["text_config"]!.AsObject().Remove("hidden_size_per_layer_input");
        Assert.Equal(256, From(json).HiddenSizePerLayerInput); // absent under text_config: the default, as in gemma4_text
        json["text_config"]!["hidden_size_per_layer_input"] = null;
        Assert.Equal(0, From(json).HiddenSizePerLayerInput);   // None: HF turns the per-layer inputs off (it read 256)
    }

    [Fact]
    public void Without_global_fields_the_full_layers_take_the_first_full_layers_per_layer_config_else_head_dim()
    {
        // transformers >= 5.17: per_layer_config {"<layer>": {"head_dim", "num_key_value_heads"}} on full layers only
        var json = Json("e2b-like", j =>
        {
            j.Remove("global_head_dim");
            j["per_layer_config"] = new JsonObject
            {
                ["0"] = new JsonObject { ["head_dim"] = 99, ["num_key_value_heads"] = 9 },   // a sliding layer: not read
                ["1"] = new JsonObject { ["head_dim"] = 48, ["num_key_value_heads"] = 3 },
                ["3"] = new JsonObject { ["head_dim"] = 40, ["num_key_value_heads"] = 5 },
            };
        });
        var c = From(json);
        Assert.Equal(48, c.GlobalHeadDim);
        Assert.Equal(3, c.NumGlobalKeyValueHeads);
        // a global_head_dim of 0 counts as absent; the written num_global_key_value_heads wins over the override
        json["global_head_dim"] = 0;
        json["num_global_key_value_heads"] = 6;
        c = From(json);
        Assert.Equal(48, c.GlobalHeadDim);
        Assert.Equal(6, c.NumGlobalKeyValueHeads);
        // neither layout: transformers' default, 512 in 5.12.1 (`global_head_dim: int = 512`) and 5.17
        // (`kwargs.pop("global_head_dim", 512)`); the engine read head_dim (16) here
        c = From(Json("e2b-like", j => j.Remove("global_head_dim")));
        Assert.Equal(512, c.GlobalHeadDim);
        Assert.Null(c.NumGlobalKeyValueHeads);
        // written as 0 or null without per_layer_config: 5.12.1's attention takes head_dim for a falsy global_head_dim
        Assert.Equal(16, From(Json("e2b-like", j => j["global_head_dim"] = 0)).GlobalHeadDim);
        Assert.Equal(16, From(Json("e2b-like", j => j["global_head_dim"] = null)).GlobalHeadDim);
    }

    [Fact]
    public void A_gemma4_config_without_placeholder_ids_takes_gemma4_configs_defaults_and_a_null_id_is_none()
    {
        // a hand-written gemma4 config that leaves the ids out: transformers (5.12.1, 5.17) defaults image_token_id 258880,
        // video_token_id 258884, audio_token_id 258881, and Gemma4Model.forward replaces them by pad_token_id; the engine
        // took "absent" as "no placeholder" and embedded the ids as text tokens
        var json = TinyGemma4.MultimodalConfig("moe");
        foreach (var k in new[] { "image_token_id", "video_token_id", "audio_token_id" }) json.Remove(k);
        var c = From(json);
        Assert.Equal([258_880, 258_884, 258_881], c.MultimodalTokenIds);
        Assert.Equal([258_880, 258_884], c.VisionTokenIds);
        json["video_token_id"] = null;                         // None: no video placeholder
        c = From(json);
        Assert.Equal([258_880, 258_881], c.MultimodalTokenIds);
        Assert.Equal([258_880], c.VisionTokenIds);
        var hf = HfConfig.Parse(json.ToJsonString(), "config.json");
        Assert.Equal(258_881, Gemma4TextConfig.TokenId(hf, "audio_token_id"));
        Assert.Null(Gemma4TextConfig.TokenId(hf, "video_token_id"));
    }

    [Fact]
    public void A_rope_parameters_entry_without_rope_type_partial_factor_or_factor_is_default_rope_over_the_whole_head()
    {
        var c = From(Json("moe", j => j["rope_parameters"]!["full_attention"] = new JsonObject { ["rope_theta"] = 30000.0 }));
        Assert.Equal(new Gemma4Rope("default", 30000, 1.0, 1.0), c.Rope["full_attention"]);
    }

    [Fact]
    public void Kv_sharing_follows_hfs_chained_comparisons_at_its_edges()
    {
        // every layer shared (first_kv_shared_layer_idx == 0): shared by `>= first >= 0`, but no double-wide MLP (`> 0`),
        // and no earlier layer to share from: refused naming layer_types
        var all = From(Json("e2b-like", j => j["num_kv_shared_layers"] = 4));
        Assert.All(Enumerable.Range(0, 4), l => Assert.True(all.IsKvSharedLayer(l)));
        Assert.All(Enumerable.Range(0, 4), l => Assert.Equal(96, all.MlpIntermediate(l)));
        var e = Assert.Throws<ConfigException>(() => all.KvSourceLayer(2));
        Assert.Equal($"{Source}: layer_types layer 2 (sliding_attention) shares K/V but no earlier non-shared layer has that type", e.Message);
        // more shared layers than layers (first < 0): none is shared
        var over = From(Json("e2b-like", j => j["num_kv_shared_layers"] = 5));
        Assert.All(Enumerable.Range(0, 4), l => Assert.False(over.IsKvSharedLayer(l)));
        // no shared layers: none is, and no MLP is double-wide
        var none = From(Json("e2b-like", j => j["num_kv_shared_layers"] = 0));
        Assert.All(Enumerable.Range(0, 4), l => Assert.False(none.IsKvSharedLayer(l)));
        Assert.All(Enumerable.Range(0, 4), l => Assert.Equal(96, none.MlpIntermediate(l)));
        // the tiny e2b-like: layers 2 and 3 shared, reading 0 and 1, double-wide; one shared layer reads the last of its type
        var one = From(Json("e2b-like", j =>
        {
            j["num_kv_shared_layers"] = 1;
            j["layer_types"] = new JsonArray("full_attention", "sliding_attention", "full_attention", "full_attention");
        }));
        Assert.Equal(2, one.KvSourceLayer(3));
        Assert.Equal(192, one.MlpIntermediate(3));
        Assert.Equal(96, one.MlpIntermediate(2));
    }

    [Fact]
    public void A_config_the_engine_cannot_run_is_refused_naming_the_file_and_the_field()
    {
        Assert.Equal($"{Source}: model_type is 'gemma3_text', expected gemma4 or gemma4_text",
            Refusal(Json("moe", j => j["model_type"] = "gemma3_text")));
        Assert.Equal($"{Source}: layer_types has 3 entries for 2 layers",
            Refusal(Json("moe", j => j["layer_types"] = new JsonArray("sliding_attention", "full_attention", "full_attention"))));
        Assert.Equal($"{Source}: layer_types.1 is 'chunked_attention'; known: sliding_attention, full_attention",
            Refusal(Json("moe", j => j["layer_types"] = new JsonArray("sliding_attention", "chunked_attention"))));
        Assert.Equal($"{Source}: rope_parameters.full_attention.rope_type is 'yarn'; the engine supports default and proportional",
            Refusal(Json("moe", j => j["rope_parameters"]!["full_attention"]!["rope_type"] = "yarn")));
        Assert.Equal($"{Source}: use_bidirectional_attention is 'all' (non-causal text): not supported by the engine",
            Refusal(Json("moe", j => j["use_bidirectional_attention"] = "all")));
        Assert.Equal($"{Source}: top_k_experts is 0; it must be in [1, num_experts=4]", Refusal(Json("moe", j => j["top_k_experts"] = 0)));
        Assert.Equal($"{Source}: top_k_experts is 5; it must be in [1, num_experts=4]", Refusal(Json("moe", j => j["top_k_experts"] = 5)));
        // the edges are allowed: top-1 and every expert
        Assert.Equal(1, From(Json("moe", j => j["top_k_experts"] = 1)).TopKExperts);
        Assert.Equal(4, From(Json("moe", j => j["top_k_experts"] = 4)).TopKExperts);
        // under text_config the field is named with its path
        var nested = TinyGemma4.MultimodalConfig("moe");
        nested["text_config"]!["top_k_experts"] = 9;
        Assert.Equal($"{Source}: text_config.top_k_experts is 9; it must be in [1, num_experts=4]", Refusal(nested));
        // without the MoE block the expert fields are not read, whatever they say
        var dense = From(Json("e2b-like", j => { j["num_experts"] = 4; j["top_k_experts"] = 9; }));
        Assert.Equal((0, 0), (dense.NumExperts, dense.TopKExperts));
    }
}
