using Harness.Engine.Config;
using Harness.Engine.Models.Llama;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// What the engine's Llama refuses in a config and a layout, and what it declares it will load (LlamaTensors,
/// LlamaRotaryEmbedding): the Stryker.NET mutants of src/Engine/Models/Llama that the offline catalog cannot kill,
/// because every catalog scenario runs a valid config under a valid layout and no scenario reads an error message
/// (notes/issue-21-mutllama.md). Each test is the bug report of one class of those mutants.
/// </summary>
public class LlamaConfigMutationTests
{
    // the tiny Llama's config, every field off its library default (fixtures/models/tiny-llama-fp32), as a JSON object to edit
    private static System.Text.Json.Nodes.JsonObject Json() => System.Text.Json.Nodes.JsonNode.Parse("""
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24, "vocab_size": 200,
         "rms_norm_eps": 2e-05, "tie_word_embeddings": true, "hidden_act": "silu", "max_position_embeddings": 256,
         "rope_parameters": {"rope_theta": 50000, "rope_type": "default"}}
        """)!.AsObject();

    private static TextConfig Parse(System.Text.Json.Nodes.JsonObject json, string source = "m/config.json") =>
        HfConfig.Parse(json.ToJsonString(), source).Text;

    private static TextConfig Tiny => Parse(Json());

    private static string Refusal(TextConfig c) => Assert.ThrowsAny<ConfigException>(() => LlamaTensors.CheckConfig(c)).Message;

    private static RopeParameters Llama3 => new()
    {
        RopeType = "llama3", RopeTheta = 50000, Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 64,
        JsonPath = "rope_parameters",
    };

    [Fact]
    public void An_odd_head_dim_is_refused_because_rotary_embeddings_pair_its_halves()
    {
        Assert.Equal("m/config.json: head_dim is 23; rotary embeddings need an even head_dim", Refusal(Tiny with { HeadDim = 23 }));
        LlamaTensors.CheckConfig(Tiny with { HeadDim = 2 });
    }

    [Fact]
    public void A_per_layer_intermediate_size_list_is_refused_but_a_list_of_one_is_one_size()
    {
        var json = Json();
        json["intermediate_size"] = new System.Text.Json.Nodes.JsonArray(128, 256);
        Assert.Equal("m/config.json: intermediate_size is a per-layer list; Llama has one intermediate_size", Refusal(Parse(json)));
        json["intermediate_size"] = new System.Text.Json.Nodes.JsonArray(128);
        LlamaTensors.CheckConfig(Parse(json));
    }

    [Fact]
    public void An_unknown_activation_is_refused_in_one_line_naming_hidden_act_without_the_parameter_suffix()
    {
        var message = Refusal(Tiny with { HiddenAct = "swish2" });
        Assert.StartsWith("m/config.json: hidden_act unknown activation 'swish2'; known: ", message);
        Assert.Contains("silu", message);
        Assert.DoesNotContain("Parameter", message);                                   // ArgumentException's " (Parameter 'name')" cut
        LlamaTensors.CheckConfig(Tiny with { HiddenAct = null });                       // HF's default: silu
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-1e-6)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(double.NaN)]
    public void An_rms_norm_eps_that_is_not_a_positive_number_is_refused(double eps) =>
        Assert.Equal($"m/config.json: rms_norm_eps must be a positive number, but is {eps}", Refusal(Tiny with { NormEps = eps }));

    [Fact]
    public void A_tiny_positive_rms_norm_eps_or_none_is_accepted()
    {
        LlamaTensors.CheckConfig(Tiny with { NormEps = double.Epsilon });
        LlamaTensors.CheckConfig(Tiny with { NormEps = null });
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-50000.0)]
    [InlineData(double.PositiveInfinity)]
    public void A_rope_theta_that_is_not_a_positive_number_is_refused_at_its_json_path(double theta) =>
        Assert.Equal($"m/config.json: rope_parameters.rope_theta must be a positive number, but is {theta}",
            Refusal(Tiny with { Rope = Tiny.Rope with { RopeTheta = theta } }));

    [Fact]
    public void A_rope_error_names_the_path_the_rope_was_read_from_or_rope_parameters_and_config_json_when_unnamed()
    {
        var unnamed = Tiny with { SourceName = "", Rope = Tiny.Rope with { RopeType = "yarn", JsonPath = "" } };
        Assert.Equal("config.json: rope_parameters.rope_type is 'yarn'; the engine's Llama supports default, linear, llama3", Refusal(unnamed));
        var legacy = Tiny with { Rope = Tiny.Rope with { RopeType = "yarn", JsonPath = "rope_scaling" } };
        Assert.Equal("m/config.json: rope_scaling.rope_type is 'yarn'; the engine's Llama supports default, linear, llama3", Refusal(legacy));
    }

    [Theory]
    [InlineData("linear")]
    [InlineData("llama3")]
    public void A_scaled_rope_needs_a_finite_positive_factor(string type)
    {
        var rope = Llama3 with { RopeType = type };
        Assert.Equal($"m/config.json: rope_parameters.factor is missing (rope_type '{type}' needs it)",
            Refusal(Tiny with { Rope = rope with { Factor = null } }));
        foreach (var f in new[] { 0.0, -2.0, double.PositiveInfinity })
            Assert.Equal($"m/config.json: rope_parameters.factor must be a positive number, but is {f}",
                Refusal(Tiny with { Rope = rope with { Factor = f } }));
        LlamaTensors.CheckConfig(Tiny with { Rope = rope });
        LlamaTensors.CheckConfig(Tiny with { Rope = rope with { Factor = 1e-300 } });
    }

    [Fact]
    public void The_default_rope_needs_no_factor_and_ignores_a_bad_one()
    {
        LlamaTensors.CheckConfig(Tiny with { Rope = Llama3 with { RopeType = "default", Factor = -1, LowFreqFactor = null, OriginalMaxPositionEmbeddings = 0 } });
        LlamaTensors.CheckConfig(Tiny with { Rope = Llama3 with { RopeType = "linear", LowFreqFactor = null, HighFreqFactor = 0, OriginalMaxPositionEmbeddings = null } });
    }

    [Fact]
    public void Llama3_rope_names_each_missing_or_inconsistent_band_field()
    {
        Assert.Equal("m/config.json: rope_parameters.low_freq_factor is missing (rope_type 'llama3' needs it)",
            Refusal(Tiny with { Rope = Llama3 with { LowFreqFactor = null } }));
        Assert.Equal("m/config.json: rope_parameters.high_freq_factor is missing (rope_type 'llama3' needs it)",
            Refusal(Tiny with { Rope = Llama3 with { HighFreqFactor = null } }));
        Assert.Equal("m/config.json: rope_parameters.original_max_position_embeddings is missing (rope_type 'llama3' needs it)",
            Refusal(Tiny with { Rope = Llama3 with { OriginalMaxPositionEmbeddings = null } }));
        foreach (var (lo, hi) in new[] { (0.0, 4.0), (-1.0, 4.0), (4.0, 4.0), (4.0, 1.0), (1.0, double.PositiveInfinity) })
            Assert.Equal($"m/config.json: rope_parameters.high_freq_factor must be above low_freq_factor > 0, but they are {hi} and {lo}",
                Refusal(Tiny with { Rope = Llama3 with { LowFreqFactor = lo, HighFreqFactor = hi } }));
        Assert.Equal("m/config.json: rope_parameters.original_max_position_embeddings must be at least 1, but is 0",
            Refusal(Tiny with { Rope = Llama3 with { OriginalMaxPositionEmbeddings = 0 } }));
        LlamaTensors.CheckConfig(Tiny with { Rope = Llama3 with { OriginalMaxPositionEmbeddings = 1, LowFreqFactor = 1e-9, HighFreqFactor = 2e-9 } });
    }

    [Fact]
    public void The_rotary_embedding_built_without_the_config_check_names_the_missing_field_or_the_unsupported_type()
    {
        Assert.Equal("rope_parameters.factor is required for this rope_type",
            Assert.Throws<ArgumentException>(() => new LlamaRotaryEmbedding(Llama3 with { RopeType = "linear", Factor = null }, 24)).Message);
        foreach (var (rope, field) in new[]
                 {
                     (Llama3 with { Factor = null }, "factor"), (Llama3 with { LowFreqFactor = null }, "low_freq_factor"),
                     (Llama3 with { HighFreqFactor = null }, "high_freq_factor"),
                     (Llama3 with { OriginalMaxPositionEmbeddings = null }, "original_max_position_embeddings"),
                 })
            Assert.Equal($"rope_parameters.{field} is required for this rope_type",
                Assert.Throws<ArgumentException>(() => new LlamaRotaryEmbedding(rope, 24)).Message);
        Assert.Equal("rope_type 'yarn' is not supported for Llama by the engine (supported: default, linear, llama3)",
            Assert.Throws<NotSupportedException>(() => new LlamaRotaryEmbedding(Llama3 with { RopeType = "yarn" }, 24)).Message);
    }

    [Fact]
    public void Linear_rope_divides_the_default_inv_freq_by_its_factor_and_llama3_keeps_the_high_frequencies()
    {
        // mutants: "linear" or "llama3" mapped to another table (the catalog's rope variants run under TP, SP and PP and
        // would catch a wrong table too; this names it)
        var plain = new LlamaRotaryEmbedding(Llama3 with { RopeType = "default" }, 24).InvFreq.ToFloatArray();
        var linear = new LlamaRotaryEmbedding(Llama3 with { RopeType = "linear" }, 24).InvFreq.ToFloatArray();
        var llama3 = new LlamaRotaryEmbedding(Llama3, 24).InvFreq.ToFloatArray();
        Assert.Equal(12, plain.Length);
        for (int i = 0; i < 12; i++) Assert.Equal(plain[i] / 8, linear[i], plain[i] * 1e-6);
        Assert.Equal(plain[0], llama3[0]);                                              // wavelength 2*pi < 64/4: unscaled
        Assert.Equal(plain[11] / 8, llama3[11], plain[11] * 1e-6);                      // the longest wavelength: / factor
    }

    [Fact]
    public void Expected_tensors_are_hfs_parameters_in_order_with_the_config_fields_their_shapes_come_from()
    {
        // mutants: a bias or shape hint dropped or emptied (the checkpoint validator's messages quote them), lm_head made
        // required for a tied model, the ignored inv_freq buffer forgotten
        var c = Tiny with { NumHiddenLayers = 1, AttentionBias = true, MlpBias = true, TieWordEmbeddings = true, IntermediateSize = 96 };
        var t = LlamaTensors.Expected(c);
        Assert.Equal("Llama", t.ModelName);
        Assert.Equal("m/config.json", t.ConfigSource);
        Assert.Equal([".rotary_emb.inv_freq"], t.IgnoredSuffixes);
        string[] want =
        [
            "model.embed_tokens.weight [200, 64] vocab_size, hidden_size",
            "model.layers.0.input_layernorm.weight [64] hidden_size",
            "model.layers.0.self_attn.q_proj.weight [96, 64] num_attention_heads * head_dim, hidden_size",
            "model.layers.0.self_attn.k_proj.weight [48, 64] num_key_value_heads * head_dim, hidden_size",
            "model.layers.0.self_attn.v_proj.weight [48, 64] num_key_value_heads * head_dim, hidden_size",
            "model.layers.0.self_attn.o_proj.weight [64, 96] hidden_size, num_attention_heads * head_dim",
            "model.layers.0.self_attn.q_proj.bias [96] num_attention_heads * head_dim",
            "model.layers.0.self_attn.k_proj.bias [48] num_key_value_heads * head_dim",
            "model.layers.0.self_attn.v_proj.bias [48] num_key_value_heads * head_dim",
            "model.layers.0.self_attn.o_proj.bias [64] hidden_size",
            "model.layers.0.post_attention_layernorm.weight [64] hidden_size",
            "model.layers.0.mlp.gate_proj.weight [96, 64] intermediate_size, hidden_size",
            "model.layers.0.mlp.up_proj.weight [96, 64] intermediate_size, hidden_size",
            "model.layers.0.mlp.down_proj.weight [64, 96] hidden_size, intermediate_size",
            "model.layers.0.mlp.gate_proj.bias [96] intermediate_size",
            "model.layers.0.mlp.up_proj.bias [96] intermediate_size",
            "model.layers.0.mlp.down_proj.bias [64] hidden_size",
            "model.norm.weight [64] hidden_size",
            "lm_head.weight [200, 64] vocab_size, hidden_size (optional)",
        ];
        Assert.Equal(want, t.Tensors.Select(e => $"{e.Name} [{string.Join(", ", e.Shape)}] {e.ShapeFrom}{(e.Optional ? " (optional)" : "")}"));
        Assert.False(LlamaTensors.Expected(c with { TieWordEmbeddings = false }).Tensors.Last().Optional);
        Assert.Equal("config.json", LlamaTensors.Expected(c with { SourceName = "" }).ConfigSource);
        Assert.Equal(1 + 2 * 9 + 2, LlamaTensors.Expected(c with { NumHiddenLayers = 2, AttentionBias = false, MlpBias = false }).Tensors.Count());
    }

    [Fact]
    public void Expected_tensors_check_the_config_first()
    {
        Assert.ThrowsAny<ConfigException>(() => LlamaTensors.Expected(Tiny with { HeadDim = 23 }));
    }

    [Theory]
    [InlineData(1, 1, null)]
    [InlineData(2, 4, null)]                    // 4 heads, 2 kv heads, 128 intermediate, 4 layers: all split
    [InlineData(4, 2, null)]                    // tp 4 > 2 kv heads: kv heads replicated (tp a multiple of them)
    [InlineData(3, 1, "--tp 3 does not divide num_attention_heads 4 (m/config.json)")]
    [InlineData(1, 3, "--pp 3 does not divide num_hidden_layers 4 (m/config.json)")]
    public void A_layout_is_refused_naming_the_option_and_the_field_it_cannot_split(int tp, int pp, string? problem) =>
        Assert.Equal(problem, LlamaTensors.LayoutProblem(Tiny, tp, pp));

    [Fact]
    public void A_layout_problem_names_kv_heads_and_intermediate_size_and_config_json_when_the_source_is_unnamed()
    {
        // 6 heads, 3 kv heads: tp 2 divides the heads but neither divides the other for kv
        Assert.Equal("--tp 2 and num_key_value_heads 3 (m/config.json): one must divide the other",
            LlamaTensors.LayoutProblem(Tiny with { NumAttentionHeads = 6, NumKeyValueHeads = 3 }, 2, 1));
        Assert.Equal("--tp 4 does not divide intermediate_size 130 (config.json)",
            LlamaTensors.LayoutProblem(Tiny with { IntermediateSize = 130, SourceName = "" }, 4, 1));
        Assert.Null(LlamaTensors.LayoutProblem(Tiny with { NumAttentionHeads = 8, NumKeyValueHeads = 8 }, 4, 1));  // kv % tp == 0
    }
}
