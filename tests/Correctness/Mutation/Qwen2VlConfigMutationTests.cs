using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Models;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Qwen2-VL's config, declared tensors and checkpoint names at their edges: every refusal of Qwen2VlConfig.From with the
/// file and field it names, the defaults a released config relies on (hidden_act and in_channels absent), every tensor
/// Qwen2VlTensors declares with its shape and the config fields it quotes, and Qwen2VlWeights' two checkpoint layouts.
/// The offline catalog builds every scenario from one valid config with every field written, so these Stryker.NET mutants
/// of src/Engine/Models/Qwen2Vl/{Qwen2VlConfig,Qwen2VlTensors,Qwen2VlWeights}.cs survived it (notes/issue-21-mutqwen.md);
/// each test is the bug report of one.
/// </summary>
public class Qwen2VlConfigMutationTests
{
    private const string Source = "qc/config.json";

    /// <summary>The tiny model's config (every field off the library default) with <paramref name="edit"/> applied.</summary>
    internal static JsonObject Json(Action<JsonObject>? edit = null)
    {
        var json = TinyQwen2Vl.Config();
        edit?.Invoke(json);
        return json;
    }

    internal static Qwen2VlConfig From(JsonObject json) => Qwen2VlConfig.From(HfConfig.Parse(json.ToJsonString(), Source));

    private static JsonObject TextOf(JsonObject j) => j["text_config"]!.AsObject();
    private static JsonObject VisionOf(JsonObject j) => j["vision_config"]!.AsObject();
    private static JsonObject RopeOf(JsonObject j) => TextOf(j)["rope_parameters"]!.AsObject();

    private static string Refusal(Action<JsonObject> edit) => Assert.Throws<ConfigException>(() => From(Json(edit))).Message;

    [Fact]
    public void Every_field_the_engine_reads_comes_from_the_config()
    {
        var c = From(Json(j => VisionOf(j)["mlp_ratio"] = 2.5));
        Assert.Equal(64, c.Text.HiddenSize);
        Assert.Equal([4, 2, 2], c.MropeSection);
        Assert.Equal(16, c.HeadDim);                                   // hidden_size / num_attention_heads
        Assert.Equal(3e-6, c.RmsNormEps);
        Assert.Equal(2, c.VisionDepth);
        Assert.Equal(32, c.VisionEmbedDim);
        Assert.Equal(4, c.VisionHeads);
        Assert.Equal(8, c.VisionHeadDim);
        Assert.Equal(80, c.VisionMlpHidden);                           // int(embed_dim * mlp_ratio)
        Assert.Equal("quick_gelu", c.VisionHiddenAct);
        Assert.Equal(4, c.PatchSize);
        Assert.Equal(1, c.TemporalPatchSize);
        Assert.Equal(3, c.SpatialMergeSize);
        Assert.Equal(3, c.InChannels);
        Assert.Equal(48, c.PatchVolume);                               // 3 * 1 * 4 * 4
        // the tiny model's temporal_patch_size 1 cannot tell a product from a quotient: Qwen2-VL-7B's 2 can
        Assert.Equal(96, From(Json(j => VisionOf(j)["temporal_patch_size"] = 2)).PatchVolume);
        Assert.Equal(64, c.VisionOutHidden);
        Assert.Equal((290, 291, 292, 293), (c.ImageTokenId, c.VideoTokenId, c.VisionStartTokenId, c.VisionEndTokenId));
    }

    [Fact]
    public void A_released_config_without_hidden_act_and_with_in_chans_runs_quick_gelu_on_in_chans_channels()
    {
        // Qwen2-VL-7B-Instruct's vision_config has neither hidden_act nor in_channels: HF uses quick_gelu and in_chans
        var c = From(Json(j =>
        {
            var v = VisionOf(j);
            v.Remove("hidden_act");
            v.Remove("in_channels");
            v["in_chans"] = 2;
        }));
        Assert.Equal("quick_gelu", c.VisionHiddenAct);
        Assert.Equal(2, c.InChannels);
        var gelu = From(Json(j => VisionOf(j)["hidden_act"] = "gelu"));
        Assert.Equal("gelu", gelu.VisionHiddenAct);                    // a written hidden_act is read
        var both = From(Json(j => VisionOf(j)["in_chans"] = 5));
        Assert.Equal(3, both.InChannels);                              // in_channels wins over in_chans
    }

    [Fact]
    public void Another_model_type_is_refused_naming_it()
    {
        Assert.Equal($"{Source}: model_type is 'qwen2_5_vl', expected 'qwen2_vl'", Refusal(j => j["model_type"] = "qwen2_5_vl"));
    }

    [Fact]
    public void A_hidden_size_the_heads_do_not_divide_is_refused_at_the_text_configs_field()
    {
        Assert.Equal($"{Source}: text_config.hidden_size 66 is not divisible by num_attention_heads 4 (Qwen2VLAttention requires it)",
            Refusal(j => { TextOf(j)["hidden_size"] = 66; TextOf(j)["head_dim"] = 16; VisionOf(j)["hidden_size"] = 66; }));
    }

    [Fact]
    public void A_flat_legacy_config_names_its_fields_without_a_text_config_prefix()
    {
        // the first Qwen2-VL configs had the text fields at the top level: the path then has no "text_config." prefix
        var flat = Json(j =>
        {
            var text = TextOf(j);
            j.Remove("text_config");
            foreach (var (k, v) in text.ToList()) { text.Remove(k); j[k] = v; }
        });
        Assert.Equal(16, From(flat).HeadDim);
        flat["hidden_size"] = 66;
        flat["head_dim"] = 16;                                          // read by the text config when hidden/heads is not whole; Qwen2-VL refuses it
        Assert.Equal($"{Source}: hidden_size 66 is not divisible by num_attention_heads 4 (Qwen2VLAttention requires it)",
            Assert.Throws<ConfigException>(() => From(flat)).Message);
        flat["hidden_size"] = 64;
        flat["rope_parameters"]!.AsObject().Remove("mrope_section");
        Assert.Equal($"{Source}: rope_parameters.mrope_section is missing", Assert.Throws<ConfigException>(() => From(flat)).Message);
    }

    [Fact]
    public void A_missing_mrope_section_is_refused()
    {
        Assert.Equal($"{Source}: text_config.rope_parameters.mrope_section is missing", Refusal(j => RopeOf(j).Remove("mrope_section")));
    }

    [Fact]
    public void A_rope_type_other_than_default_is_refused_and_the_legacy_mrope_name_is_the_default()
    {
        var m = Refusal(j => { RopeOf(j)["rope_type"] = "linear"; RopeOf(j)["factor"] = 2.0; });
        Assert.Equal($"{Source}: text_config.rope_parameters.rope_type is 'linear'; the engine's Qwen2-VL supports the default M-RoPE only ('default', or the legacy 'mrope')", m);
        // the pre-5.x layout: rope_scaling {"type": "mrope"} is read as the default type with its section
        var legacy = From(Json(j =>
        {
            TextOf(j).Remove("rope_parameters");
            TextOf(j)["rope_theta"] = 50000.0;
            TextOf(j)["rope_scaling"] = new JsonObject { ["type"] = "mrope", ["mrope_section"] = new JsonArray(4, 2, 2) };
        }));
        Assert.Equal([4, 2, 2], legacy.MropeSection);
    }

    [Theory]
    [InlineData("[4, 2, 1]")]       // sums to 7
    [InlineData("[4, 4]")]          // sums to 8 in 2 entries
    [InlineData("[2, 2, 2, 2]")]    // sums to 8 in 4 entries
    [InlineData("[4, 2, 3]")]       // sums to 9
    public void An_mrope_section_that_is_not_3_entries_summing_to_half_the_head_dim_is_refused(string section)
    {
        var m = Refusal(j => RopeOf(j)["mrope_section"] = JsonNode.Parse(section));
        Assert.Equal($"{Source}: text_config.rope_parameters.mrope_section is {section}: it needs 3 entries summing to head_dim/2 = 8", m);
    }

    [Fact]
    public void A_vision_embed_dim_the_vision_heads_do_not_divide_is_refused()
    {
        Assert.Equal($"{Source}: vision_config.embed_dim 30 is not divisible by num_heads 4", Refusal(j => VisionOf(j)["embed_dim"] = 30));
    }

    [Fact]
    public void A_vision_hidden_size_other_than_the_text_hidden_size_is_refused()
    {
        Assert.Equal($"{Source}: vision_config.hidden_size is 48, but the merger's output feeds the text model of hidden_size 64",
            Refusal(j => VisionOf(j)["hidden_size"] = 48));
    }

    [Fact]
    public void A_config_without_rms_norm_eps_is_refused()
    {
        Assert.Equal($"{Source}: text_config.rms_norm_eps is missing", Refusal(j => TextOf(j).Remove("rms_norm_eps")));
    }

    // ---- Qwen2VlTensors ----

    private static string Row(ExpectedTensor e) => $"{e.Name} {Shape.Format(e.Shape)} {e.ShapeFrom}{(e.Optional ? " optional" : "")}";

    [Fact]
    public void The_declared_tensors_are_hfs_modules_with_their_shapes_and_the_fields_that_make_them()
    {
        // one text layer with mlp_bias, one vision block, untied: every tensor and hint once
        var c = From(Json(j =>
        {
            TextOf(j)["num_hidden_layers"] = 1;
            TextOf(j)["mlp_bias"] = true;
            VisionOf(j)["depth"] = 1;
            j["tie_word_embeddings"] = false;
            VisionOf(j)["spatial_merge_size"] = 2;
        }));
        var m = Qwen2VlTensors.Expected(c);
        Assert.Equal("Qwen2-VL", m.ModelName);
        Assert.Equal(Source, m.ConfigSource);
        Assert.Equal([".rotary_emb.inv_freq"], m.IgnoredSuffixes);
        Assert.Equal([("model.language_model.", "model."), ("model.visual.", "visual.")], m.StoredPrefixes);
        string[] expected =
        [
            "model.language_model.embed_tokens.weight [300, 64] text vocab_size, hidden_size",
            "model.language_model.layers.0.input_layernorm.weight [64] hidden_size",
            "model.language_model.layers.0.post_attention_layernorm.weight [64] hidden_size",
            "model.language_model.layers.0.self_attn.q_proj.weight [64, 64] num_attention_heads * head_dim, hidden_size",
            "model.language_model.layers.0.self_attn.q_proj.bias [64] num_attention_heads * head_dim",
            "model.language_model.layers.0.self_attn.k_proj.weight [32, 64] num_key_value_heads * head_dim, hidden_size",
            "model.language_model.layers.0.self_attn.k_proj.bias [32] num_key_value_heads * head_dim",
            "model.language_model.layers.0.self_attn.v_proj.weight [32, 64] num_key_value_heads * head_dim, hidden_size",
            "model.language_model.layers.0.self_attn.v_proj.bias [32] num_key_value_heads * head_dim",
            "model.language_model.layers.0.self_attn.o_proj.weight [64, 64] hidden_size, num_attention_heads * head_dim",
            "model.language_model.layers.0.mlp.gate_proj.weight [96, 64] intermediate_size, hidden_size",
            "model.language_model.layers.0.mlp.up_proj.weight [96, 64] intermediate_size, hidden_size",
            "model.language_model.layers.0.mlp.down_proj.weight [64, 96] hidden_size, intermediate_size",
            "model.language_model.layers.0.mlp.gate_proj.bias [96] intermediate_size (mlp_bias)",
            "model.language_model.layers.0.mlp.up_proj.bias [96] intermediate_size (mlp_bias)",
            "model.language_model.layers.0.mlp.down_proj.bias [64] hidden_size (mlp_bias)",
            "model.language_model.norm.weight [64] hidden_size",
            "lm_head.weight [300, 64] text vocab_size, hidden_size",
            "model.visual.patch_embed.proj.weight [32, 3, 1, 4, 4] vision embed_dim, in_channels, temporal_patch_size, patch_size, patch_size",
            "model.visual.blocks.0.norm1.weight [32] vision embed_dim",
            "model.visual.blocks.0.norm1.bias [32] vision embed_dim",
            "model.visual.blocks.0.norm2.weight [32] vision embed_dim",
            "model.visual.blocks.0.norm2.bias [32] vision embed_dim",
            "model.visual.blocks.0.attn.qkv.weight [96, 32] 3 * vision embed_dim, embed_dim",
            "model.visual.blocks.0.attn.qkv.bias [96] 3 * vision embed_dim",
            "model.visual.blocks.0.attn.proj.weight [32, 32] vision embed_dim, embed_dim",
            "model.visual.blocks.0.attn.proj.bias [32] vision embed_dim",
            "model.visual.blocks.0.mlp.fc1.weight [64, 32] vision embed_dim * mlp_ratio, embed_dim",
            "model.visual.blocks.0.mlp.fc1.bias [64] vision embed_dim * mlp_ratio",
            "model.visual.blocks.0.mlp.fc2.weight [32, 64] vision embed_dim, embed_dim * mlp_ratio",
            "model.visual.blocks.0.mlp.fc2.bias [32] vision embed_dim",
            "model.visual.merger.ln_q.weight [32] vision embed_dim",
            "model.visual.merger.ln_q.bias [32] vision embed_dim",
            "model.visual.merger.mlp.0.weight [128, 128] embed_dim * spatial_merge_size^2 (both)",
            "model.visual.merger.mlp.0.bias [128] embed_dim * spatial_merge_size^2",
            "model.visual.merger.mlp.2.weight [64, 128] vision hidden_size, embed_dim * spatial_merge_size^2",
            "model.visual.merger.mlp.2.bias [64] vision hidden_size",
        ];
        Assert.Equal(expected, m.Tensors.Select(Row).ToArray());
    }

    [Fact]
    public void Layers_and_blocks_repeat_per_index_without_mlp_bias_and_a_tied_lm_head_is_optional()
    {
        var c = From(Json());                                          // 2 layers, 2 blocks, no mlp_bias, tied
        var rows = Qwen2VlTensors.Expected(c).Tensors.Select(Row).ToArray();
        Assert.Equal(1 + 2 * 12 + 2 + 1 + 2 * 12 + 6, rows.Length);
        Assert.DoesNotContain(rows, r => r.Contains("mlp_bias", StringComparison.Ordinal));
        Assert.Contains("lm_head.weight [300, 64] text vocab_size, hidden_size optional", rows);
        Assert.Contains("model.language_model.layers.1.mlp.down_proj.weight [64, 96] hidden_size, intermediate_size", rows);
        Assert.Contains("model.visual.blocks.1.mlp.fc2.bias [32] vision embed_dim", rows);
        Assert.Contains("model.visual.merger.mlp.0.weight [288, 288] embed_dim * spatial_merge_size^2 (both)", rows);
        // the model class declares the same list from an HfConfig
        var viaModel = Qwen2VlForConditionalGeneration.ExpectedTensors(HfConfig.Parse(Json().ToJsonString(), Source));
        Assert.Equal(rows, viaModel.Tensors.Select(Row).ToArray());
        Assert.Equal(["qwen2_vl"], Qwen2VlForConditionalGeneration.ModelTypes);
    }

    [Fact]
    public void A_config_parsed_without_a_file_name_is_reported_as_config_json()
    {
        var c = From(Json());
        Assert.Equal("config.json", Qwen2VlTensors.Expected(c with { Text = c.Text with { SourceName = "" } }).ConfigSource);
    }

    // ---- Qwen2VlWeights ----

    private static readonly Tensor T2x3 = Tensor.Zeros(DType.Float32, 2, 3);

    [Fact]
    public void The_released_layout_is_read_under_hfs_module_paths_and_a_name_missing_from_both_is_reported_as_asked()
    {
        var released = new Qwen2VlWeights(new DictionaryWeights(new Dictionary<string, Tensor>
        {
            ["model.layers.0.mlp.up_proj.weight"] = T2x3, ["visual.blocks.0.norm1.weight"] = T2x3, ["lm_head.weight"] = T2x3,
            ["model.language_model.norm.weight"] = T2x3,
        }));
        Assert.Equal("model.layers.0.mlp.up_proj.weight", released.Resolve("model.language_model.layers.0.mlp.up_proj.weight"));
        Assert.Equal("visual.blocks.0.norm1.weight", released.Resolve("model.visual.blocks.0.norm1.weight"));
        Assert.Equal("lm_head.weight", released.Resolve("lm_head.weight"));
        Assert.Equal("model.language_model.norm.weight", released.Resolve("model.language_model.norm.weight"));   // the module layout itself
        Assert.Equal("model.visual.merger.ln_q.weight", released.Resolve("model.visual.merger.ln_q.weight"));     // in neither
        Assert.Equal("visual.x", released.Resolve("visual.x"));                                                     // not a module path
        Assert.True(released.Contains("model.visual.blocks.0.norm1.weight"));
        Assert.False(released.Contains("model.visual.blocks.1.norm1.weight"));
        Assert.Same(T2x3, released.Get("model.language_model.layers.0.mlp.up_proj.weight"));
        var e = Assert.Throws<KeyNotFoundException>(() => released.Get("model.visual.merger.ln_q.weight"));
        Assert.Contains("'model.visual.merger.ln_q.weight'", e.Message);
    }

    [Fact]
    public void A_weight_whose_shape_its_config_field_does_not_make_is_refused_naming_the_stored_name_and_the_field()
    {
        var w = new Qwen2VlWeights(new DictionaryWeights(new Dictionary<string, Tensor> { ["model.layers.0.mlp.gate_proj.weight"] = T2x3 }));
        w.Expect("model.language_model.layers.0.mlp.gate_proj.weight", "text intermediate_size 2", 2, 3);   // matches: no error
        var e = Assert.Throws<ArgumentException>(() => w.Expect("model.language_model.layers.0.mlp.gate_proj.weight", "text intermediate_size 3", 3, 3));
        Assert.Equal("model.layers.0.mlp.gate_proj.weight is [2, 3], but text intermediate_size 3 makes it [3, 3]", e.Message);
        Assert.Throws<ArgumentException>(() => w.Expect("model.language_model.layers.0.mlp.gate_proj.weight", "f", 2, 3, 1));
    }
}
