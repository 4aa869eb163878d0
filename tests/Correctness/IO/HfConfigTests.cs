using Harness.Engine.Config;

namespace Harness.Tests.Correctness.IO;

/// <summary>The config.json files transformers 5.12.1 writes (fixtures/io/configs, see fixtures/io/README.md).</summary>
public class HfConfigTests
{
    private static HfConfig Fixture(string name) => HfConfig.Load(IoFixtures.Path_("configs", name));

    [Fact]
    public void Llama_flat_config_with_llama3_rope_parameters_and_an_eos_list()
    {
        var c = Fixture("llama.json");
        Assert.Equal("llama", c.ModelType);
        Assert.Null(c.Vision);
        var t = c.Text;
        Assert.Equal("", t.JsonPath);
        Assert.Equal((64, 128, 2, 4, 2, 16, 128), (t.HiddenSize, t.IntermediateSize, t.NumHiddenLayers, t.NumAttentionHeads, t.NumKeyValueHeads, t.HeadDim, t.VocabSize));
        Assert.Equal(256, t.MaxPositionEmbeddings);
        Assert.Equal(1e-6, t.NormEps);
        Assert.Equal("silu", t.HiddenAct);
        Assert.False(t.TieWordEmbeddings);
        Assert.False(t.AttentionBias);
        Assert.False(t.MlpBias);
        Assert.Equal(1, t.BosTokenId);
        Assert.Equal([1, 2], t.EosTokenIds);
        Assert.Null(t.PadTokenId);
        Assert.Null(t.RopeByLayerType);
        Assert.Equal("llama3", t.Rope.RopeType);
        Assert.Equal(500000.0, t.Rope.RopeTheta);
        Assert.Equal(8.0, t.Rope.Factor);
        Assert.Equal(1.0, t.Rope.LowFreqFactor);
        Assert.Equal(4.0, t.Rope.HighFreqFactor);
        Assert.Equal(128, t.Rope.OriginalMaxPositionEmbeddings);
        Assert.Equal(1, c.GetInt("pretraining_tp"));
    }

    [Fact]
    public void Qwen2VL_nested_text_and_vision_configs_with_mrope_sections()
    {
        var c = Fixture("qwen2_vl.json");
        Assert.Equal("qwen2_vl", c.ModelType);
        var t = c.Text;
        Assert.Equal("text_config", t.JsonPath);
        Assert.Equal("qwen2_vl_text", t.ModelType);
        Assert.Equal((64, 128, 2, 4, 2, 256), (t.HiddenSize, t.IntermediateSize, t.NumHiddenLayers, t.NumAttentionHeads, t.NumKeyValueHeads, t.VocabSize));
        Assert.Equal(16, t.HeadDim); // defaulted: 64 / 4
        Assert.Equal(1e-5, t.NormEps);
        Assert.False(t.TieWordEmbeddings); // from the root: text_config has none
        Assert.Equal(151643, t.BosTokenId);
        Assert.Equal([151645], t.EosTokenIds);
        Assert.Null(t.SlidingWindow);
        Assert.Equal(["full_attention", "full_attention"], t.LayerTypes!);
        Assert.Equal("default", t.Rope.RopeType);
        Assert.Equal(1000000.0, t.Rope.RopeTheta);
        Assert.Equal([2, 3, 3], t.Rope.MropeSection!);

        var v = c.Vision!;
        Assert.Equal("qwen2_vl_vision", v.ModelType);
        Assert.Equal(64, v.HiddenSize);
        Assert.Equal(32, v.EmbedDim);
        Assert.Equal(2, v.NumHiddenLayers);   // "depth"
        Assert.Equal(2, v.NumAttentionHeads); // "num_heads"
        Assert.Equal(14, v.PatchSize);
        Assert.Equal(2, v.TemporalPatchSize);
        Assert.Equal(2, v.SpatialMergeSize);
        Assert.Equal(3, v.NumChannels);       // "in_channels"
        Assert.Equal("quick_gelu", v.HiddenAct);
        Assert.Equal(151655, c.GetInt("image_token_id"));
    }

    [Fact]
    public void Gemma4_per_layer_type_rope_parameters_and_vision_tower()
    {
        var c = Fixture("gemma4.json");
        Assert.Equal("gemma4", c.ModelType);
        var t = c.Text;
        Assert.Equal("gemma4_text", t.ModelType);
        Assert.Equal((64, 128, 4, 4, 2, 16, 256), (t.HiddenSize, t.IntermediateSize, t.NumHiddenLayers, t.NumAttentionHeads, t.NumKeyValueHeads, t.HeadDim, t.VocabSize));
        Assert.Equal("gelu_pytorch_tanh", t.HiddenAct); // "hidden_activation"
        Assert.True(t.TieWordEmbeddings);
        Assert.Equal(32, t.SlidingWindow);
        Assert.Equal(0, t.PadTokenId);
        Assert.Equal(["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"], t.LayerTypes!);
        Assert.NotNull(t.RopeByLayerType);
        var full = t.RopeFor("full_attention");
        Assert.Equal("proportional", full.RopeType);
        Assert.Equal(1000000.0, full.RopeTheta);
        Assert.Equal(0.25, full.PartialRotaryFactor);
        Assert.Same(full, t.Rope);
        var sliding = t.RopeFor("sliding_attention");
        Assert.Equal("default", sliding.RopeType);
        Assert.Equal(10000.0, sliding.RopeTheta);
        Assert.Null(sliding.PartialRotaryFactor);
        Assert.Equal(512, c.GetInt("text_config.global_head_dim"));
        Assert.Null(c.GetIntOrNull("text_config.num_experts"));

        var v = c.Vision!;
        Assert.Equal("gemma4_vision", v.ModelType);
        Assert.Equal((32, 2, 2, 64, 16), (v.HiddenSize, v.NumHiddenLayers, v.NumAttentionHeads, v.IntermediateSize, v.PatchSize));
        Assert.Equal(64, v.HeadDim);
        Assert.Equal(1e-6, v.NormEps);
        Assert.Equal(100.0, v.Rope!.RopeTheta);
    }

    [Fact]
    public void Gemma3n_per_layer_intermediate_sizes_and_a_mobilenet_vision_tower_without_layers()
    {
        var c = Fixture("gemma3n.json");
        Assert.Equal("gemma3n", c.ModelType);
        var t = c.Text;
        Assert.Equal(128, t.IntermediateSize);
        Assert.Equal([128, 128, 128, 128], t.IntermediateSizes!);
        Assert.Equal(16, t.HeadDim);
        Assert.Equal((2, 1), (t.BosTokenId!.Value, t.EosTokenIds[0]));
        Assert.Equal(1000000.0, t.RopeFor("full_attention").RopeTheta);
        Assert.Equal(10000.0, t.RopeFor("sliding_attention").RopeTheta);
        Assert.Equal(2, c.GetInt("text_config.num_kv_shared_layers"));
        Assert.Equal([0.95, 0.95, 0.0, 0.0], c.GetDoubleListOrNull("text_config.activation_sparsity_pattern")!);
        Assert.Equal("full_attention", c.GetString("text_config.layer_types.3"));

        var v = c.Vision!;
        Assert.Equal("gemma3n_vision", v.ModelType);
        Assert.Equal(2048, v.HiddenSize);
        Assert.Null(v.NumHiddenLayers);
        Assert.Null(v.PatchSize);
        Assert.Equal("mobilenetv5_300m_enc", c.GetString("vision_config.architecture"));
    }

    [Fact]
    public void Legacy_rope_theta_and_rope_scaling_read_into_the_same_rope_parameters()
    {
        var c = HfConfig.Parse("""
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10, "torch_dtype": "bfloat16",
             "rope_theta": 250000.0, "rope_scaling": {"type": "linear", "factor": 2.0}, "eos_token_id": 3}
            """, "legacy.json");
        Assert.Equal(["LlamaForCausalLM"], c.Architectures);
        var t = c.Text;
        Assert.Equal(4, t.NumKeyValueHeads); // defaults to num_attention_heads
        Assert.Equal(8, t.HeadDim);          // defaults to hidden_size / heads
        Assert.True(t.TieWordEmbeddings);    // PretrainedConfig's default
        Assert.Equal("bfloat16", t.DType);   // "torch_dtype"
        Assert.Equal([3], t.EosTokenIds);
        Assert.Equal("linear", t.Rope.RopeType);
        Assert.Equal(250000.0, t.Rope.RopeTheta);
        Assert.Equal(2.0, t.Rope.Factor);
    }

    [Fact]
    public void Legacy_yarn_scaling_and_no_rope_keys_at_all()
    {
        var yarn = HfConfig.Parse("""
            {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
             "vocab_size": 10, "rope_theta": 1e6, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
             "original_max_position_embeddings": 32768, "beta_fast": 32, "beta_slow": 1}}
            """, "yarn.json").Text.Rope;
        Assert.Equal(("yarn", 1e6, 4.0, 32768, 32.0, 1.0), (yarn.RopeType, yarn.RopeTheta, yarn.Factor!.Value, yarn.OriginalMaxPositionEmbeddings!.Value, yarn.BetaFast!.Value, yarn.BetaSlow!.Value));

        var none = HfConfig.Parse("""{"model_type": "x", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4, "rope_scaling": null}""", "none.json").Text.Rope;
        Assert.Equal(("default", 10000.0), (none.RopeType, none.RopeTheta));
    }

    [Fact]
    public void Legacy_gemma3_rope_local_base_freq_becomes_a_sliding_attention_entry()
    {
        var t = HfConfig.Parse("""
            {"model_type": "gemma3_text", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "head_dim": 8, "vocab_size": 10, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
             "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
            """, "gemma3.json").Text;
        Assert.Equal(("linear", 1000000.0, 8.0), (t.RopeFor("full_attention").RopeType, t.RopeFor("full_attention").RopeTheta, t.RopeFor("full_attention").Factor!.Value));
        Assert.Equal(("default", 10000.0), (t.RopeFor("sliding_attention").RopeType, t.RopeFor("sliding_attention").RopeTheta));
    }

    [Fact]
    public void A_missing_required_field_names_the_file_and_the_json_path()
    {
        var path = IoFixtures.Path_("configs", "qwen2_vl.json");
        string json = File.ReadAllText(path).Replace("\"hidden_size\": 64,\n    \"initializer_range\"", "\"initializer_range\"");
        Assert.DoesNotContain("\"hidden_size\": 64,\n    \"initializer_range\"", json);
        var e = Assert.Throws<ConfigException>(() => HfConfig.Parse(json, "config.json"));
        Assert.Equal("config.json: text_config.hidden_size is missing", e.Message);
        Assert.Equal("text_config.hidden_size", e.JsonPath);
    }

    [Theory]
    [InlineData("""{"model_type": "m", "hidden_size": "64", "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4}""",
                "cfg.json: hidden_size must be an integer, but is a string (\"64\")")]
    [InlineData("""{"model_type": "m", "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": null, "num_attention_heads": 2, "vocab_size": 4}""",
                "cfg.json: num_hidden_layers is null, expected an integer")]
    [InlineData("""{"model_type": "m", "text_config": {"hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4, "hidden_act": 5}}""",
                "cfg.json: text_config.hidden_act must be a string, but is a number (5)")]
    [InlineData("""{"model_type": "m", "text_config": {"hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4, "eos_token_id": [1, "2"]}}""",
                "cfg.json: text_config.eos_token_id[1] must be an integer, but is a string (\"2\")")]
    [InlineData("""{"model_type": "m", "text_config": {"hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4, "rope_parameters": {"full_attention": {"rope_type": "default"}}}}""",
                "cfg.json: text_config.rope_parameters.full_attention.rope_theta is missing")]
    [InlineData("""{"model_type": "m", "text_config": [], "hidden_size": 1}""",
                "cfg.json: text_config must be an object, but is a list ([])")]
    [InlineData("""{"hidden_size": 64}""", "cfg.json: model_type is missing")]
    [InlineData("""{"model_type": "m", "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4, "vision_config": {"patch_size": 14}}""",
                "cfg.json: vision_config.hidden_size is missing")]
    public void A_wrongly_typed_or_missing_field_names_the_file_and_the_json_path(string json, string message)
    {
        var e = Assert.Throws<ConfigException>(() => HfConfig.Parse(json, "cfg.json"));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void Path_getters_report_missing_paths_and_not_json_documents()
    {
        var c = Fixture("gemma4.json");
        var e = Assert.Throws<ConfigException>(() => c.GetInt("text_config.no_such_key"));
        Assert.Contains("gemma4.json: text_config.no_such_key is missing", e.Message);
        Assert.Equal(7, c.GetInt("text_config.no_such_key", 7));
        Assert.Throws<ConfigException>(() => c.GetInt("text_config.hidden_activation"));
        Assert.Contains("is not valid JSON", Assert.Throws<ConfigException>(() => HfConfig.Parse("{", "broken.json")).Message);
    }
}
