using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma3n;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma3n's config and declared tensors at their edges: every refusal of Gemma3nConfig.Read with the file and field it
/// names (and the boundary value it still accepts), the gemma3n_text layout (Gemma3nForCausalLM: the text settings at
/// the root, weights under "model."), the defaults and shapes a released config relies on (an int intermediate_size, a
/// null final_logit_softcapping), and every tensor Gemma3nTensors declares with the config fields its shape comes from.
/// The offline catalog builds every gemma3n scenario from one valid multimodal config, so these Stryker.NET mutants of
/// src/Engine/Models/Gemma3n/{Gemma3nConfig,Gemma3nTensors}.cs survived it (notes/issue-21-mutgemma3n.md); each test is
/// the bug report of one.
/// </summary>
public class Gemma3nConfigMutationTests
{
    private const string Source = "gc/config.json";

    /// <summary>The tiny model's config (every field off HF's default) with <paramref name="edit"/> applied.</summary>
    internal static JsonObject Json(Action<JsonObject>? edit = null)
    {
        var json = TinyGemma3n.Config();
        edit?.Invoke(json);
        return json;
    }

    /// <summary>The tiny model's text_config as a gemma3n_text (Gemma3nForCausalLM) config.json, edited.</summary>
    internal static JsonObject TextJson(Action<JsonObject>? edit = null)
    {
        var json = JsonNode.Parse(TinyGemma3n.Config()["text_config"]!.ToJsonString())!.AsObject();
        json["architectures"] = new JsonArray("Gemma3nForCausalLM");
        edit?.Invoke(json);
        return json;
    }

    internal static Gemma3nConfig Read(JsonObject json, string source = Source) => Gemma3nConfig.Read(HfConfig.Parse(json.ToJsonString(), source));

    private static JsonObject TextOf(JsonObject j) => j["text_config"]!.AsObject();

    private static string Refusal(Action<JsonObject> edit) => Assert.Throws<ConfigException>(() => Read(Json(edit))).Message;
    private static string TextRefusal(Action<JsonObject> edit) => Refusal(j => edit(TextOf(j)));

    [Fact]
    public void A_gemma3n_text_config_reads_the_text_settings_at_the_root_with_weights_under_model_and_no_embedders()
    {
        var c = Read(TextJson());
        Assert.Equal("gemma3n_text", c.ModelType);
        Assert.Equal("model", c.TextPrefix);                          // Gemma3nForCausalLM: model.layers.0...
        Assert.False(c.IsMultimodal);
        Assert.Null(c.Vision);
        Assert.Null(c.Audio);
        Assert.Equal((int?)null, c.ImageTokenId);
        Assert.Equal((32, 4, 256, 8, 4, 3, 1), (c.Text.HiddenSize, c.Text.NumLayers, c.Text.VocabSizePerLayerInput, c.Text.HiddenSizePerLayerInput,
            c.Text.LaurelRank, c.Text.AltupNumInputs, c.Text.AltupActiveIdx));
        Assert.Equal([64, 64, 48, 48], c.Text.IntermediateSizes);
        Assert.Equal("model.language_model", Read(Json()).TextPrefix);   // Gemma3nForConditionalGeneration
        Assert.True(Read(Json()).IsMultimodal);
    }

    [Fact]
    public void Only_gemma3n_and_gemma3n_text_are_read_and_both_load_through_Gemma3nModel()
    {
        Assert.Equal("gc/config.json: model_type is 'gemma3', expected 'gemma3n' or 'gemma3n_text'",
            Refusal(j => j["model_type"] = "gemma3"));
        Assert.Equal(["gemma3n", "gemma3n_text"], Gemma3nModel.ModelTypes);
    }

    [Theory]
    [InlineData("vision_config")]
    [InlineData("audio_config")]
    public void A_gemma3n_config_without_a_modality_section_is_refused_naming_it(string section) =>
        Assert.Equal($"gc/config.json: {section} is missing", Refusal(j => j.Remove(section)));

    [Fact]
    public void A_gemma3n_config_without_text_config_is_refused_naming_it()
    {
        // the text settings at the root (a gemma3n_text file) labelled gemma3n: HF's Gemma3nConfig would build a default text_config
        var json = TextJson(j => j["model_type"] = "gemma3n");
        Assert.Equal("gc/config.json: text_config is missing", Assert.Throws<ConfigException>(() => Read(json)).Message);
    }

    [Fact]
    public void The_vocabulary_is_text_ids_then_the_vision_range_then_the_audio_range_inside_vocab_size()
    {
        // Gemma3nModel.forward: vision_mask = vision_offset <= id < audio_offset; audio_mask = id >= audio_offset
        Assert.Equal("gc/config.json: vision_config.vocab_offset is 255, below text_config.vocab_size_per_layer_input 256",
            Refusal(j => j["vision_config"]!["vocab_offset"] = 255));
        Assert.Equal("gc/config.json: audio_config.vocab_offset is 255, below vision_config.vocab_offset 256",
            Refusal(j => j["audio_config"]!["vocab_offset"] = 255));
        Assert.Equal("gc/config.json: audio_config.vocab_size 9 from offset 264 runs past text_config.vocab_size 272",
            Refusal(j => j["audio_config"]!["vocab_size"] = 9));
        // the boundaries are allowed: an audio range starting where the vision range starts, ending at vocab_size
        var c = Read(Json(j => { j["audio_config"]!["vocab_offset"] = 256; j["audio_config"]!["vocab_size"] = 16; }));
        Assert.Equal((256, 256, 16), (c.Vision!.VocabOffset, c.Audio!.VocabOffset, c.Audio.VocabSize));
    }

    [Fact]
    public void An_int_intermediate_size_applies_to_every_layer_and_a_list_needs_one_per_layer()
    {
        Assert.Equal([40, 40, 40, 40], Read(Json(j => TextOf(j)["intermediate_size"] = 40)).Text.IntermediateSizes);
        Assert.Equal("gc/config.json: text_config.intermediate_size has 3 entries for 4 layers",
            TextRefusal(t => t["intermediate_size"] = new JsonArray(64, 64, 48)));
        Assert.Equal("gc/config.json: text_config.intermediate_size is missing", TextRefusal(t => t.Remove("intermediate_size")));
    }

    [Fact]
    public void Layer_types_are_one_per_layer_each_sliding_or_full()
    {
        Assert.Equal("gc/config.json: text_config.layer_types is missing", TextRefusal(t => t.Remove("layer_types")));
        Assert.Equal("gc/config.json: text_config.layer_types has 3 entries for 4 layers",
            TextRefusal(t => t["layer_types"] = new JsonArray("sliding_attention", "full_attention", "sliding_attention")));
        Assert.Equal("gc/config.json: text_config.layer_types[2] is 'chunked_attention', expected 'sliding_attention' or 'full_attention'",
            TextRefusal(t => t["layer_types"] = new JsonArray("sliding_attention", "full_attention", "chunked_attention", "full_attention")));
    }

    [Fact]
    public void Activation_sparsity_is_a_value_in_0_to_1_per_layer()
    {
        Assert.Equal("gc/config.json: text_config.activation_sparsity_pattern is missing", TextRefusal(t => t.Remove("activation_sparsity_pattern")));
        Assert.Equal("gc/config.json: text_config.activation_sparsity_pattern[1] is 1, expected a value in [0, 1)",
            TextRefusal(t => t["activation_sparsity_pattern"] = new JsonArray(0.8, 1.0, 0.0, 0.0)));
        Assert.Equal("gc/config.json: text_config.activation_sparsity_pattern[3] is -0.25, expected a value in [0, 1)",
            TextRefusal(t => t["activation_sparsity_pattern"] = new JsonArray(0.8, 0.6, 0.0, -0.25)));
        Assert.Equal([0.999, 0.0, 0.0, 0.5],
            Read(Json(j => TextOf(j)["activation_sparsity_pattern"] = new JsonArray(0.999, 0.0, 0.0, 0.5))).Text.ActivationSparsity);
    }

    [Fact]
    public void A_null_final_logit_softcapping_is_no_soft_cap_and_a_missing_one_is_refused()
    {
        Assert.Null(Read(Json(j => TextOf(j)["final_logit_softcapping"] = null)).Text.FinalLogitSoftcapping);
        Assert.Equal(7.5, Read(Json()).Text.FinalLogitSoftcapping);
        Assert.Equal("gc/config.json: text_config.final_logit_softcapping is missing", TextRefusal(t => t.Remove("final_logit_softcapping")));
    }

    [Fact]
    public void Kv_sharing_covers_0_to_all_but_one_layer_and_every_shared_layer_needs_an_earlier_layer_of_its_type()
    {
        Assert.Equal("gc/config.json: text_config.num_kv_shared_layers is -1, expected 0 to 3", TextRefusal(t => t["num_kv_shared_layers"] = -1));
        Assert.Equal("gc/config.json: text_config.num_kv_shared_layers is 4, expected 0 to 3", TextRefusal(t => t["num_kv_shared_layers"] = 4));
        var none = Read(Json(j => TextOf(j)["num_kv_shared_layers"] = 0)).Text;
        Assert.Equal([0, 1, 2, 3], Enumerable.Range(0, 4).Select(none.KvSourceLayer));
        var allSliding = new JsonArray("sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention");
        var three = Read(Json(j => { TextOf(j)["num_kv_shared_layers"] = 3; TextOf(j)["layer_types"] = allSliding; })).Text;
        Assert.Equal([0, 0, 0, 0], Enumerable.Range(0, 4).Select(three.KvSourceLayer));
        // layer 3 (full) shares, but the non-shared layers 0 and 1 are both sliding: refused when the config is read
        var e = Assert.Throws<InvalidOperationException>(() => Read(Json(j => TextOf(j)["layer_types"] =
            new JsonArray("sliding_attention", "sliding_attention", "sliding_attention", "full_attention"))));
        Assert.Equal("layer 3 (full_attention) shares keys and values, but no earlier layer has its type", e.Message);
    }

    [Fact]
    public void With_every_layer_counted_as_shared_no_layer_shares_as_in_hf()
    {
        // HF: is_kv_shared_layer = layer_idx >= first_kv_shared_layer_idx > 0; first = 0 shares nothing (the config
        // reader refuses num_kv_shared_layers = num_hidden_layers; a settings record built directly may hold it)
        var text = Read(Json()).Text with { NumKvSharedLayers = 4 };
        Assert.Equal(0, text.FirstKvSharedLayer);
        Assert.Equal([0, 1, 2, 3], Enumerable.Range(0, 4).Select(text.KvSourceLayer));
        Assert.Equal(2, Read(Json()).Text.FirstKvSharedLayer);
    }

    [Fact]
    public void AltUp_needs_two_streams_and_an_active_stream_among_them()
    {
        Assert.Equal("gc/config.json: text_config.altup_num_inputs is 1, expected at least 2", TextRefusal(t => t["altup_num_inputs"] = 1));
        Assert.Equal(2, Read(Json(j => TextOf(j)["altup_num_inputs"] = 2)).Text.AltupNumInputs);
        Assert.Equal("gc/config.json: text_config.altup_active_idx is -1, expected 0 to 2", TextRefusal(t => t["altup_active_idx"] = -1));
        Assert.Equal("gc/config.json: text_config.altup_active_idx is 3, expected 0 to 2", TextRefusal(t => t["altup_active_idx"] = 3));
        Assert.Equal(0, Read(Json(j => TextOf(j)["altup_active_idx"] = 0)).Text.AltupActiveIdx);
        Assert.Equal(2, Read(Json(j => TextOf(j)["altup_active_idx"] = 2)).Text.AltupActiveIdx);
    }

    [Fact]
    public void Rope_parameters_are_default_rope_per_layer_type()
    {
        Assert.Equal("gc/config.json: text_config.rope_parameters needs an entry per layer type (sliding_attention, full_attention)",
            TextRefusal(t => t["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 500.0 }));
        Assert.Equal("gc/config.json: text_config.rope_parameters.full_attention is missing",
            TextRefusal(t => t["rope_parameters"]!.AsObject().Remove("full_attention")));
        Assert.Equal("gc/config.json: text_config.rope_parameters.sliding_attention has rope_type 'linear'; the engine's Gemma3n supports 'default'",
            TextRefusal(t => t["rope_parameters"]!["sliding_attention"] = new JsonObject { ["rope_type"] = "linear", ["rope_theta"] = 500.0, ["factor"] = 2.0 }));
    }

    [Fact]
    public void The_per_layer_vocabulary_may_be_the_whole_vocabulary_but_not_more()
    {
        Assert.Equal(272, Read(TextJson(t => t["vocab_size_per_layer_input"] = 272)).Text.VocabSizePerLayerInput);
        Assert.Equal("gc/config.json: vocab_size_per_layer_input is 273, above vocab_size 272",
            Assert.Throws<ConfigException>(() => Read(TextJson(t => t["vocab_size_per_layer_input"] = 273))).Message);
    }

    [Fact]
    public void The_embedders_read_their_own_section_and_name_it()
    {
        var c = Read(Json());
        Assert.Equal(("vision_config", 24, 8, 256, 4e-6), (c.Vision!.JsonPath, c.Vision.HiddenSize, c.Vision.VocabSize, c.Vision.VocabOffset, c.Vision.RmsNormEps));
        Assert.Equal(("audio_config", 32, 8, 264, 5e-6), (c.Audio!.JsonPath, c.Audio.HiddenSize, c.Audio.VocabSize, c.Audio.VocabOffset, c.Audio.RmsNormEps));
        Assert.Equal((4, 3, 257, 265), (c.VisionSoftTokensPerImage, c.AudioSoftTokensPerImage, c.ImageTokenId, c.AudioTokenId));
        Assert.Equal(("silu", true, 3, 2e-6), (c.Text.HiddenActivation, c.Text.AltupCorrectScale, c.Text.SlidingWindow, c.Text.RmsNormEps));
    }

    private static string Row(ExpectedTensor e) => $"{e.Name} [{string.Join(", ", e.Shape)}] ({e.ShapeFrom}){(e.Optional ? " optional" : "")}";

    [Fact]
    public void The_declared_tensors_are_hfs_names_with_the_config_fields_their_shapes_come_from()
    {
        var model = Gemma3nTensors.Expected(Read(Json()));
        Assert.Equal("Gemma3n", model.ModelName);
        Assert.Equal(Source, model.ConfigSource);
        Assert.Equal([".rotary_emb.inv_freq"], model.IgnoredSuffixes);
        Assert.Equal(["model.vision_tower.", "model.audio_tower."], model.IgnoredPrefixes!);
        var rows = model.Tensors.Select(Row).ToList();
        const string p = "model.language_model";
        string[] head =
        [
            $"{p}.embed_tokens.weight [272, 32] (vocab_size, hidden_size)",
            $"{p}.embed_tokens_per_layer.weight [256, 32] (vocab_size_per_layer_input, num_hidden_layers * hidden_size_per_layer_input)",
            $"{p}.per_layer_model_projection.weight [32, 32] (num_hidden_layers * hidden_size_per_layer_input, hidden_size)",
            $"{p}.per_layer_projection_norm.weight [8] (hidden_size_per_layer_input)",
            $"{p}.altup_projections.0.weight [32, 32] (hidden_size, hidden_size (altup_num_inputs - 1 of them))",
            $"{p}.altup_unembed_projections.0.weight [32, 32] (hidden_size, hidden_size (altup_num_inputs - 1 of them))",
            $"{p}.altup_projections.1.weight [32, 32] (hidden_size, hidden_size (altup_num_inputs - 1 of them))",
            $"{p}.altup_unembed_projections.1.weight [32, 32] (hidden_size, hidden_size (altup_num_inputs - 1 of them))",
        ];
        Assert.Equal(head, rows.Take(head.Length));
        string[] Layer(int l, int inter, bool ownsKv) =>
        [
            $"{p}.layers.{l}.altup.correct_output_scale [32] (hidden_size)",
            $"{p}.layers.{l}.altup.correction_coefs.weight [3, 3] (altup_num_inputs, altup_num_inputs)",
            $"{p}.layers.{l}.altup.modality_router.weight [3, 32] (altup_num_inputs, hidden_size)",
            $"{p}.layers.{l}.altup.prediction_coefs.weight [9, 3] (altup_num_inputs^2, altup_num_inputs)",
            $"{p}.layers.{l}.altup.router_norm.weight [32] (hidden_size)",
            $"{p}.layers.{l}.input_layernorm.weight [32] (hidden_size)",
            $"{p}.layers.{l}.post_attention_layernorm.weight [32] (hidden_size)",
            $"{p}.layers.{l}.pre_feedforward_layernorm.weight [32] (hidden_size)",
            $"{p}.layers.{l}.post_feedforward_layernorm.weight [32] (hidden_size)",
            $"{p}.layers.{l}.post_per_layer_input_norm.weight [32] (hidden_size)",
            $"{p}.layers.{l}.laurel.linear_left.weight [4, 32] (laurel_rank, hidden_size)",
            $"{p}.layers.{l}.laurel.linear_right.weight [32, 4] (hidden_size, laurel_rank)",
            $"{p}.layers.{l}.laurel.post_laurel_norm.weight [32] (hidden_size)",
            $"{p}.layers.{l}.mlp.gate_proj.weight [{inter}, 32] (intermediate_size[{l}], hidden_size)",
            $"{p}.layers.{l}.mlp.up_proj.weight [{inter}, 32] (intermediate_size[{l}], hidden_size)",
            $"{p}.layers.{l}.mlp.down_proj.weight [32, {inter}] (hidden_size, intermediate_size[{l}])",
            $"{p}.layers.{l}.per_layer_input_gate.weight [8, 32] (hidden_size_per_layer_input, hidden_size)",
            $"{p}.layers.{l}.per_layer_projection.weight [32, 8] (hidden_size, hidden_size_per_layer_input)",
            $"{p}.layers.{l}.self_attn.q_proj.weight [32, 32] (num_attention_heads * head_dim, hidden_size)",
            $"{p}.layers.{l}.self_attn.q_norm.weight [8] (head_dim)",
            .. ownsKv ? (string[])
            [
                $"{p}.layers.{l}.self_attn.k_proj.weight [16, 32] (num_key_value_heads * head_dim, hidden_size)",
                $"{p}.layers.{l}.self_attn.v_proj.weight [16, 32] (num_key_value_heads * head_dim, hidden_size)",
                $"{p}.layers.{l}.self_attn.k_norm.weight [8] (head_dim)",
            ] : [],
            $"{p}.layers.{l}.self_attn.o_proj.weight [32, 32] (hidden_size, num_attention_heads * head_dim)",
        ];
        string[] tail =
        [
            $"{p}.norm.weight [32] (hidden_size)",
            "lm_head.weight [272, 32] (vocab_size, hidden_size) optional",
            "model.embed_vision.embedding.weight [8, 24] (vision_config.vocab_size, vision_config.hidden_size)",
            "model.embed_vision.hard_embedding_norm.weight [24] (vision_config.hidden_size)",
            "model.embed_vision.soft_embedding_norm.weight [24] (vision_config.hidden_size)",
            "model.embed_vision.embedding_projection.weight [32, 24] (text_config.hidden_size, vision_config.hidden_size)",
            "model.embed_audio.embedding.weight [8, 32] (audio_config.vocab_size, audio_config.hidden_size)",
            "model.embed_audio.hard_embedding_norm.weight [32] (audio_config.hidden_size)",
            "model.embed_audio.soft_embedding_norm.weight [32] (audio_config.hidden_size)",
            "model.embed_audio.embedding_projection.weight [32, 32] (text_config.hidden_size, audio_config.hidden_size)",
        ];
        string[] expected = [.. head, .. Layer(0, 64, true), .. Layer(1, 64, true), .. Layer(2, 48, false), .. Layer(3, 48, false), .. tail];
        Assert.Equal(expected, rows);
    }

    [Fact]
    public void Attention_bias_declares_q_and_o_biases_on_every_layer_and_k_v_biases_where_the_layer_owns_its_cache()
    {
        var rows = Gemma3nTensors.Expected(Read(Json(j => TextOf(j)["attention_bias"] = true))).Tensors.Select(Row).Where(r => r.Contains(".bias ")).ToList();
        const string p = "model.language_model.layers";
        Assert.Equal(
        [
            $"{p}.0.self_attn.q_proj.bias [32] (num_attention_heads * head_dim (attention_bias))",
            $"{p}.0.self_attn.k_proj.bias [16] (num_key_value_heads * head_dim (attention_bias))",
            $"{p}.0.self_attn.v_proj.bias [16] (num_key_value_heads * head_dim (attention_bias))",
            $"{p}.0.self_attn.o_proj.bias [32] (hidden_size (attention_bias))",
            $"{p}.1.self_attn.q_proj.bias [32] (num_attention_heads * head_dim (attention_bias))",
            $"{p}.1.self_attn.k_proj.bias [16] (num_key_value_heads * head_dim (attention_bias))",
            $"{p}.1.self_attn.v_proj.bias [16] (num_key_value_heads * head_dim (attention_bias))",
            $"{p}.1.self_attn.o_proj.bias [32] (hidden_size (attention_bias))",
            $"{p}.2.self_attn.q_proj.bias [32] (num_attention_heads * head_dim (attention_bias))",
            $"{p}.2.self_attn.o_proj.bias [32] (hidden_size (attention_bias))",
            $"{p}.3.self_attn.q_proj.bias [32] (num_attention_heads * head_dim (attention_bias))",
            $"{p}.3.self_attn.o_proj.bias [32] (hidden_size (attention_bias))",
        ], rows);
    }

    [Fact]
    public void A_gemma3n_text_model_declares_its_weights_under_model_without_embedders_and_an_untied_head_is_required()
    {
        var model = Gemma3nTensors.Expected(Read(TextJson(t => t["tie_word_embeddings"] = false), source: ""));
        Assert.Equal("config.json", model.ConfigSource);                 // a config parsed from a string without a file name
        var rows = model.Tensors.Select(Row).ToList();
        Assert.Equal("model.embed_tokens.weight [272, 32] (vocab_size, hidden_size)", rows[0]);
        Assert.Contains("model.layers.3.self_attn.o_proj.weight [32, 32] (hidden_size, num_attention_heads * head_dim)", rows);
        Assert.Equal("lm_head.weight [272, 32] (vocab_size, hidden_size)", rows[^1]);
        Assert.DoesNotContain(rows, r => r.Contains("embed_vision", StringComparison.Ordinal) || r.Contains("embed_audio", StringComparison.Ordinal));
        Assert.All(rows.SkipLast(1), r => Assert.StartsWith("model.", r, StringComparison.Ordinal));
        Assert.DoesNotContain(rows, r => r.StartsWith("model.language_model", StringComparison.Ordinal));
    }
}
