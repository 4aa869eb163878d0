using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma3n.Audio;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma3n's audio tower (src/Engine/Models/Gemma3n/Audio: Gemma3nAudioConfig.cs, Gemma3nAudioEncoder.cs) on the recorded
/// tiny tower (fixtures/models/tiny-gemma3n-audio-fp32): what the catalog's audio-tower scenarios and Gemma3nAudioTowerTests
/// cannot see, each a Stryker.NET mutant that survived them (notes/issue-21-mutg3ntowers.md), written as the bug report it
/// guards: the standalone gemma3n_audio layout, every config refusal with its file, field and boundary, the shape errors'
/// config hints, the input checks, the recorded module list, and the matmul the caller chose.
/// </summary>
public class Gemma3nAudioTowerMutationTests
{
    private static string ModelDir => Path.Combine(Fixtures.DefaultDirectory(), "models", TinyGemma3nAudio.ModelName + "-fp32");

    private static T WithConfigFile<T>(JsonNode json, Func<string, T> load)
    {
        var path = Path.Combine(Path.GetTempPath(), $"g3n-audio-mut-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json.ToJsonString());
        try { return load(path); }
        finally { File.Delete(path); }
    }

    /// <summary>A gemma3n config.json holding <paramref name="audio"/> as its audio_config.</summary>
    private static JsonObject Nested(JsonObject audio) => new() { ["model_type"] = "gemma3n", ["audio_config"] = audio };

    private static Gemma3nAudioConfig Load(JsonObject audio) => WithConfigFile(Nested(audio), Gemma3nAudioConfig.Load);

    private static ConfigException Refused(JsonObject audio) =>
        WithConfigFile(Nested(audio), path => Assert.Throws<ConfigException>(() => Gemma3nAudioConfig.Load(path)));

    private static JsonObject Audio(Action<JsonObject> edit)
    {
        var audio = TinyGemma3nAudio.AudioConfig();
        edit(audio);
        return audio;
    }

    // ---- Gemma3nAudioConfig.Load / Read ----

    [Fact]
    public void A_standalone_gemma3n_audio_config_is_read_from_its_root_and_its_fields_are_named_without_a_prefix()
    {
        var audio = TinyGemma3nAudio.AudioConfig();
        audio["model_type"] = "gemma3n_audio";
        var c = WithConfigFile(audio, Gemma3nAudioConfig.Load);
        Assert.Equal((24, 20, 2, 3), (c.HiddenSize, c.InputFeatSize, c.ConfNumHiddenLayers, c.ConfNumAttentionHeads));
        Assert.Equal([(3, 4), (2, 3)], c.SscpConvKernelSize);

        audio.Remove("hidden_size");
        var e = WithConfigFile(audio, path => Assert.Throws<ConfigException>(() => Gemma3nAudioConfig.Load(path)));
        Assert.Equal("hidden_size", e.JsonPath);
    }

    [Fact]
    public void A_config_without_audio_config_says_the_model_has_no_audio_tower()
    {
        var e = WithConfigFile(new JsonObject { ["model_type"] = "gemma3n" }, path => Assert.Throws<ConfigException>(() => Gemma3nAudioConfig.Load(path)));
        Assert.Equal("audio_config", e.JsonPath);
        Assert.Contains("audio_config is missing: the model has no audio tower", e.Message);
    }

    [Fact]
    public void A_missing_config_file_is_named_as_the_config_file()
    {
        var path = Path.Combine(Path.GetTempPath(), $"g3n-audio-absent-{Guid.NewGuid():N}.json");
        var e = Assert.Throws<InputException>(() => Gemma3nAudioConfig.Load(path));
        Assert.Contains("no such config file", e.Message);
    }

    public static TheoryData<string> Fields() =>
    [
        "hidden_size", "input_feat_size", "rms_norm_eps", "gradient_clipping", "conf_attention_chunk_size", "conf_attention_context_left",
        "conf_attention_context_right", "conf_attention_logit_cap", "conf_num_attention_heads", "conf_num_hidden_layers",
        "conf_conv_kernel_size", "conf_reduction_factor", "conf_residual_weight", "sscp_conv_channel_size", "sscp_conv_group_norm_eps",
        "sscp_conv_kernel_size", "sscp_conv_stride_size",
    ];

    [Theory]
    [MemberData(nameof(Fields))]
    public void Every_field_the_tower_reads_is_required_and_a_missing_one_is_named_by_its_path(string field)
    {
        var e = Refused(Audio(a => a.Remove(field)));
        Assert.Equal($"audio_config.{field}", e.JsonPath);
        Assert.Contains("is missing", e.Message);
    }

    [Fact]
    public void Three_sscp_channel_counts_are_refused_the_subsampling_has_two_convs()
    {
        var e = Refused(Audio(a => a["sscp_conv_channel_size"] = new JsonArray(6, 4, 2)));
        Assert.Equal("audio_config.sscp_conv_channel_size", e.JsonPath);
        Assert.Contains("must list 2 channel counts, got 3", e.Message);
    }

    [Theory]
    [InlineData(5, "5 does not divide hidden_size 24")]     // 24 % 5 != 0
    [InlineData(0, "0 does not divide hidden_size 24")]     // no head at all (and no division by zero)
    public void Heads_that_do_not_divide_hidden_size_are_refused_naming_both(int heads, string words)
    {
        var e = Refused(Audio(a => a["conf_num_attention_heads"] = heads));
        Assert.Equal("audio_config.conf_num_attention_heads", e.JsonPath);
        Assert.Contains(words, e.Message);
    }

    [Fact]
    public void One_head_of_the_whole_width_is_accepted() => Assert.Equal(24, Load(Audio(a => a["conf_num_attention_heads"] = 1)).HeadDim);

    [Fact]
    public void An_odd_hidden_size_is_refused_the_timing_signal_has_sin_and_cos_halves()
    {
        var e = Refused(Audio(a => a["hidden_size"] = 27));                 // 3 heads of 9: divisible, but odd
        Assert.Equal("audio_config.hidden_size", e.JsonPath);
        Assert.Contains("must be even (sin and cos halves of the timing signal), got 27", e.Message);
    }

    [Theory]
    [InlineData("conf_attention_chunk_size", 0, "must be at least 1, got 0")]
    [InlineData("conf_attention_context_right", -1, "must not be negative, got -1")]
    [InlineData("conf_reduction_factor", 0, "must be at least 1, got 0")]
    [InlineData("conf_conv_kernel_size", 0, "must be at least 1, got 0")]
    public void A_count_below_its_least_value_is_refused_naming_the_field(string field, int value, string words)
    {
        var e = Refused(Audio(a => a[field] = value));
        Assert.Equal($"audio_config.{field}", e.JsonPath);
        Assert.Contains(words, e.Message);
    }

    [Fact]
    public void Each_count_at_its_least_value_is_accepted()
    {
        Assert.Equal(1, Load(Audio(a => a["conf_attention_chunk_size"] = 1)).ConfAttentionChunkSize);
        Assert.Equal(0, Load(Audio(a => a["conf_attention_context_right"] = 0)).ConfAttentionContextRight);
        Assert.Equal(1, Load(Audio(a => a["conf_reduction_factor"] = 1)).ConfReductionFactor);
        Assert.Equal(1, Load(Audio(a => a["conf_conv_kernel_size"] = 1)).ConfConvKernelSize);
    }

    [Theory]
    // conv 0: (input_feat_size 1 + 2 - kernel 5) / 2 + 1 = 0 bins
    [InlineData(1, 5, 3, "conv 0 leaves no frequency bins (input_feat_size 1)")]
    // conv 0 leaves (20 + 2 - 4) / 2 + 1 = 10; conv 1: (10 + 2 - 14) / 2 + 1 = 0
    [InlineData(20, 4, 14, "conv 1 leaves no frequency bins (input_feat_size 20)")]
    public void A_frequency_kernel_wider_than_the_padded_bins_is_refused_naming_the_conv(int mel, int kernel0, int kernel1, string words)
    {
        var e = Refused(Audio(a =>
        {
            a["input_feat_size"] = mel;
            a["sscp_conv_kernel_size"] = new JsonArray(new JsonArray(3, kernel0), new JsonArray(2, kernel1));
        }));
        Assert.Equal("audio_config.sscp_conv_kernel_size", e.JsonPath);
        Assert.Contains(words, e.Message);
    }

    [Fact]
    public void A_frequency_kernel_that_leaves_exactly_one_bin_is_accepted()
    {
        // conv 0 leaves (20 + 2 - 4) / 2 + 1 = 10 bins, conv 1 (10 + 2 - 12) / 2 + 1 = 1: the least a conv may leave
        var c = Load(Audio(a => a["sscp_conv_kernel_size"] = new JsonArray(new JsonArray(3, 4), new JsonArray(2, 12))));
        Assert.Equal((10, 1), (c.FreqOut(0), c.FreqOut(1)));
    }

    [Theory]
    [InlineData("3", "must list 2 [time, frequency] pairs")]                                 // not a list
    [InlineData("[[3, 4]]", "must list 2 [time, frequency] pairs")]                          // one pair
    [InlineData("[[3, 4], [2, 3], [1, 1]]", "must list 2 [time, frequency] pairs")]          // three
    [InlineData("[3, [2, 3]]", "entry 0 must be a [time, frequency] pair of positive integers")]
    [InlineData("[[3, 4], [2, 3, 1]]", "entry 1 must be a [time, frequency] pair of positive integers")]
    [InlineData("[[3, 4], [2, \"3\"]]", "entry 1 must be a [time, frequency] pair of positive integers")]
    [InlineData("[[3, 4.5], [2, 3]]", "entry 0 must be a [time, frequency] pair of positive integers")]
    [InlineData("[[3, 4], [0, 3]]", "entry 1 must be a [time, frequency] pair of positive integers")]
    public void A_kernel_list_that_is_not_two_pairs_of_positive_integers_is_refused(string json, string words)
    {
        var e = Refused(Audio(a => a["sscp_conv_kernel_size"] = JsonNode.Parse(json)));
        Assert.Equal("audio_config.sscp_conv_kernel_size", e.JsonPath);
        Assert.Contains(words, e.Message);
    }

    [Fact]
    public void A_kernel_of_one_in_both_dimensions_is_accepted()
    {
        var c = Load(Audio(a => a["sscp_conv_kernel_size"] = new JsonArray(new JsonArray(1, 1), new JsonArray(2, 3))));
        Assert.Equal([(1, 1), (2, 3)], c.SscpConvKernelSize);
    }

    [Fact]
    public void The_mask_is_subsampled_by_the_product_of_the_convs_time_strides()
    {
        // time_stride_product = 2 * 3 (the tiny tower's strides 2 and 1 give the same 2 multiplied or divided)
        var c = Load(Audio(a => a["sscp_conv_stride_size"] = new JsonArray(new JsonArray(2, 2), new JsonArray(3, 2))));
        Assert.Equal(6, c.TimeStrideProduct);
    }

    // ---- the tower on the recorded checkpoint ----

    /// <summary>The recorded checkpoint with one tensor replaced.</summary>
    private sealed class Replaced(IWeightSource inner, string name, Tensor value) : IWeightSource
    {
        public bool Contains(string n) => inner.Contains(n);
        public Tensor Get(string n) => n == name ? value : inner.Get(n);
    }

    private static ArgumentException BuildFails(Gemma3nAudioConfig config, Func<IWeightSource, IWeightSource>? edit = null)
    {
        using var checkpoint = Checkpoint.Open(ModelDir);
        IWeightSource weights = new CheckpointWeights(checkpoint);
        weights = edit?.Invoke(weights) ?? weights;
        return Assert.Throws<ArgumentException>(() => new Gemma3nAudioEncoder(weights, config));
    }

    private static Gemma3nAudioConfig Recorded => Gemma3nAudioConfig.Load(Path.Combine(ModelDir, "config.json"));

    [Fact]
    public void More_mel_bins_than_the_checkpoint_was_built_for_names_input_proj_linear_and_the_fields_it_depends_on()
    {
        // 24 bins: conv 0 leaves 12, conv 1 leaves 6, so input_proj_linear would be [24, 4 * 6]; the checkpoint's is [24, 4 * 5]
        var e = BuildFails(Recorded with { InputFeatSize = 24 });
        Assert.Equal("model.audio_tower.subsample_conv_projection.input_proj_linear.weight is [24, 20] but the config " +
                     "(audio_config.sscp_conv_channel_size, input_feat_size, hidden_size) implies [24, 24]", e.Message);
    }

    [Fact]
    public void A_time_kernel_the_checkpoint_does_not_have_names_conv_0_and_its_fields()
    {
        var e = BuildFails(Recorded with { SscpConvKernelSize = [(4, 4), (2, 3)] });
        Assert.Equal("model.audio_tower.subsample_conv_projection.conv_0.conv.weight is [6, 1, 3, 4] but the config " +
                     "(audio_config.sscp_conv_channel_size, sscp_conv_kernel_size) implies [6, 1, 4, 4]", e.Message);
    }

    [Fact]
    public void Conv_1_reads_conv_0s_channels_as_its_input()
    {
        // conv_1's weight is [C1, C0, kh, kw]: with C0 = 7 the expected shape names 7 input channels (conv_0 fails first on
        // its own output channels, so conv_0 is given a checkpoint tensor of the new width)
        const string conv0 = "model.audio_tower.subsample_conv_projection.conv_0";
        var e = BuildFails(Recorded with { SscpConvChannelSize = [7, 4] }, w => new Replaced(new Replaced(w, $"{conv0}.conv.weight",
            Tensor.Zeros(DType.Float32, 7, 1, 3, 4)), $"{conv0}.norm.weight", Tensor.Zeros(DType.Float32, 7)));
        Assert.Equal("model.audio_tower.subsample_conv_projection.conv_1.conv.weight is [4, 6, 2, 3] but the config " +
                     "(audio_config.sscp_conv_channel_size, sscp_conv_kernel_size) implies [4, 7, 2, 3]", e.Message);
    }

    [Theory]
    [InlineData("model.audio_tower.subsample_conv_projection.conv_0.norm.weight", 5,
        "model.audio_tower.subsample_conv_projection.conv_0.norm.weight is [5] but the config (audio_config.sscp_conv_channel_size) implies [6]")]
    [InlineData("model.audio_tower.conformer.1.attention.attn.per_dim_scale", 5,
        "model.audio_tower.conformer.1.attention.attn.per_dim_scale is [5] but the config (audio_config.hidden_size / conf_num_attention_heads) implies [8]")]
    public void A_checkpoint_vector_of_the_wrong_length_is_named_with_the_fields_that_size_it(string name, int length, string message)
    {
        var e = BuildFails(Recorded, w => new Replaced(w, name, Tensor.Zeros(DType.Float32, length)));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void A_light_conv_kernel_the_checkpoint_does_not_have_names_the_depthwise_weight_and_its_fields()
    {
        const string name = "model.audio_tower.conformer.0.lconv1d.depthwise_conv1d.weight";
        var e = BuildFails(Recorded, w => new Replaced(w, name, Tensor.Zeros(DType.Float32, 24, 1, 4)));
        Assert.Contains(name, e.Message);
        Assert.Contains("(audio_config.hidden_size, conf_conv_kernel_size)", e.Message);
    }

    [Theory]
    [InlineData("model.audio_tower.conformer.0.attention.attn.q_proj.weight")]
    [InlineData("model.audio_tower.conformer.0.attention.attn.k_proj.weight")]
    [InlineData("model.audio_tower.conformer.0.attention.attn.v_proj.weight")]
    [InlineData("model.audio_tower.conformer.0.attention.attn.relative_position_embedding.pos_proj.weight")]
    [InlineData("model.audio_tower.conformer.1.attention.post.weight")]
    [InlineData("model.audio_tower.conformer.1.ffw_layer_start.ffw_layer_1.weight")]
    [InlineData("model.audio_tower.conformer.1.ffw_layer_end.ffw_layer_1.weight")]
    public void A_linear_weight_that_is_not_a_matrix_is_named(string name)
    {
        var e = BuildFails(Recorded, w => new Replaced(w, name, Tensor.Zeros(DType.Float32, 24)));
        Assert.Contains(name, e.Message);
    }

    private static Gemma3nAudioEncoder.Output Encode(Tensor features, bool[]? valid = null, MatmulOptions? matmul = null, IActivationSink? sink = null)
    {
        using var checkpoint = Checkpoint.Open(ModelDir);
        return new Gemma3nAudioEncoder(new CheckpointWeights(checkpoint), Recorded, sink, matmul: matmul).Forward(features, valid);
    }

    [Fact]
    public void Features_without_a_batch_axis_are_refused_naming_the_tower_and_the_shape()
    {
        var features = TinyGemma3nAudio.Inputs(DType.Float32).Features.Select(0, 0);          // [40, 20]
        var e = Assert.Throws<ArgumentException>(() => Encode(features));
        Assert.Equal("model.audio_tower: input_features must be [batch, frames, 20] (audio_config.input_feat_size), got [40, 20]", e.Message);
    }

    [Fact]
    public void Features_of_another_mel_width_are_refused_naming_input_feat_size()
    {
        var features = Tensor.Zeros(DType.Float32, 1, 40, 21);
        var e = Assert.Throws<ArgumentException>(() => Encode(features));
        Assert.Equal("model.audio_tower: input_features must be [batch, frames, 20] (audio_config.input_feat_size), got [1, 40, 21]", e.Message);
    }

    [Fact]
    public void A_mask_of_another_length_than_the_clips_is_refused_naming_both()
    {
        var features = TinyGemma3nAudio.Inputs(DType.Float32).Features;                        // [2, 40, 20]
        var e = Assert.Throws<ArgumentException>(() => Encode(features, new bool[79]));
        Assert.Equal("model.audio_tower: 79 input_features_mask flags for input_features [2, 40, 20]", e.Message);
    }

    [Fact]
    public void Without_a_mask_every_frame_is_valid_and_a_mask_of_all_valid_frames_gives_the_same_bits()
    {
        var features = TinyGemma3nAudio.Inputs(DType.Float32).Features;
        var none = Encode(features);
        var all = Encode(features, Enumerable.Repeat(true, 80).ToArray());
        Assert.True(none.Encodings.BitwiseEquals(all.Encodings));
        Assert.All(none.Padding, Assert.False);
        Assert.Equal([2, 7, 24], none.Encodings.ShapeArray);
    }

    [Fact]
    public void The_tower_runs_on_the_matmul_it_is_given()
    {
        // vLLM's pre-fix batch-invariant matmul has no ND x ND path: the USM attention's [B, N, U*W, H] @ [N, H, F] fails
        var features = TinyGemma3nAudio.Inputs(DType.Float32).Features;
        Assert.ThrowsAny<Exception>(() => Encode(features, matmul: MatmulOptions.PreFixBatchInvariant));
    }

    [Fact]
    public void The_recorded_modules_are_hfs_paths_in_forward_order()
    {
        const string s = "model.audio_tower.subsample_conv_projection";
        string[] Block(int i) =>
        [
            $"model.audio_tower.conformer.{i}.ffw_layer_start", $"model.audio_tower.conformer.{i}.attention.attn",
            $"model.audio_tower.conformer.{i}.attention", $"model.audio_tower.conformer.{i}.lconv1d",
            $"model.audio_tower.conformer.{i}.ffw_layer_end", $"model.audio_tower.conformer.{i}",
        ];
        string[] expected = [$"{s}.conv_0", $"{s}.conv_1", s, .. Block(0), .. Block(1), "model.audio_tower"];
        Assert.Equal(expected, Gemma3nAudioEncoder.Modules(2));
        Assert.Equal(["x.subsample_conv_projection.conv_0", "x.subsample_conv_projection.conv_1", "x.subsample_conv_projection", "x"],
            Gemma3nAudioEncoder.Modules(0, "x"));

        // and the tower records each of them once, at that path
        var sink = new RecordingSink();
        Encode(TinyGemma3nAudio.Inputs(DType.Float32).Features, sink: sink);
        Assert.Equal(expected, sink.Names);
    }

    private sealed class RecordingSink : IActivationSink
    {
        public List<string> Names { get; } = [];
        public bool Wants(string module) => true;
        public void Record(string module, int rank, Tensor value, ShardSpec shard) => Names.Add(module);
    }
}
