using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma4's audio tower config (src/Engine/Models/Gemma4/Audio/Gemma4AudioConfig.cs) on the recorded tiny tower
/// checkpoint (fixtures/models/gemma4-towers-e2b-like-fp32): the checks the offline catalog and Gemma4TowerTests cannot
/// make, each a Stryker.NET mutant that survived them (notes/issue-21-muttower.md), written as the bug report it guards.
/// </summary>
public class Gemma4TowerMutationTests
{
    private static string ModelConfig =>
        Path.Combine(Fixtures.DefaultDirectory(), "models", TinyGemma4Towers.ModelName + "-fp32", "config.json");

    /// <summary>The recorded model's audio_config object, to edit.</summary>
    private static JsonObject AudioConfig() =>
        JsonNode.Parse(File.ReadAllText(ModelConfig))!["audio_config"]!.DeepClone().AsObject();

    private static T WithConfigFile<T>(JsonNode json, Func<string, T> load)
    {
        var path = Path.Combine(Path.GetTempPath(), $"g4-audio-mut-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json.ToJsonString());
        try { return load(path); }
        finally { File.Delete(path); }
    }

    private static ConfigException LoadFails(JsonNode json) =>
        WithConfigFile(json, path => Assert.Throws<ConfigException>(() => Gemma4AudioConfig.Load(path)));

    /// <summary>The error of building the tower on the recorded checkpoint with the edited audio_config.</summary>
    private static ArgumentException ShapeError(JsonObject audio)
    {
        var config = WithConfigFile(new JsonObject { ["audio_config"] = audio }, Gemma4AudioConfig.Load);
        using var checkpoint = Checkpoint.Open(Path.GetDirectoryName(ModelConfig)!);
        return Assert.ThrowsAny<ArgumentException>(() => new Gemma4AudioModel(new CheckpointWeights(checkpoint), config));
    }

    [Theory]
    [InlineData(0, "layer0")]
    [InlineData(1, "layer1")]
    public void A_subsampling_channel_count_the_checkpoint_does_not_have_names_that_conv_kernel(int which, string layer)
    {
        var audio = AudioConfig();
        var channels = audio["subsampling_conv_channels"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray();
        channels[which] += 4;   // still a multiple of 4 (input_proj_linear's input is channels[0] / 4 * channels[1])
        audio["subsampling_conv_channels"] = new JsonArray(channels.Select(c => (JsonNode)c).ToArray());
        var e = ShapeError(audio);
        Assert.Contains($".subsample_conv_projection.{layer}.conv.weight is ", e.Message);
        Assert.Contains("but the config (audio_config.subsampling_conv_channels) implies", e.Message);
    }

    [Fact]
    public void A_standalone_audio_tower_config_with_model_type_gemma4_audio_is_read_from_its_root()
    {
        var audio = AudioConfig();
        audio["model_type"] = "gemma4_audio";
        var expected = Gemma4AudioConfig.Load(ModelConfig);
        var c = WithConfigFile(audio, Gemma4AudioConfig.Load);
        Assert.Equal(expected.HiddenSize, c.HiddenSize);
        Assert.Equal(expected.NumHiddenLayers, c.NumHiddenLayers);
        Assert.Equal(expected.SubsamplingConvChannels, c.SubsamplingConvChannels);
    }

    [Fact]
    public void A_model_without_audio_config_says_it_has_no_audio_tower()
    {
        var e = LoadFails(new JsonObject { ["model_type"] = "gemma4" });
        Assert.Equal("audio_config", e.JsonPath);
        Assert.Contains("is missing: the model has no audio tower", e.Message);
    }

    [Fact]
    public void A_missing_field_of_the_nested_audio_config_is_named_by_its_path_from_the_document_root()
    {
        var audio = AudioConfig();
        audio.Remove("num_hidden_layers");
        var e = LoadFails(new JsonObject { ["model_type"] = "gemma4", ["audio_config"] = audio });
        Assert.Equal("audio_config.num_hidden_layers", e.JsonPath);
    }

    [Fact]
    public void A_missing_config_file_is_named_as_the_config_file()
    {
        var path = Path.Combine(Path.GetTempPath(), $"g4-audio-absent-{Guid.NewGuid():N}.json");
        var e = Assert.Throws<InputException>(() => Gemma4AudioConfig.Load(path));
        Assert.Contains("no such config file", e.Message);
    }

    [Fact]
    public void Missing_subsampling_conv_channels_is_named_as_missing()
    {
        var audio = AudioConfig();
        audio.Remove("subsampling_conv_channels");
        var e = LoadFails(new JsonObject { ["audio_config"] = audio });
        Assert.Equal("audio_config.subsampling_conv_channels", e.JsonPath);
        Assert.Contains("is missing", e.Message);
    }

    [Fact]
    public void Three_subsampling_conv_channels_are_refused_the_tower_has_two_convolutions()
    {
        var audio = AudioConfig();
        audio["subsampling_conv_channels"] = new JsonArray(4, 8, 16);
        var e = LoadFails(new JsonObject { ["audio_config"] = audio });
        Assert.Equal("audio_config.subsampling_conv_channels", e.JsonPath);
        Assert.Contains("must list 2 channel counts, got 3", e.Message);
    }

    [Fact]
    public void Heads_that_do_not_divide_hidden_size_are_refused_naming_both()
    {
        var audio = AudioConfig();
        int hidden = audio["hidden_size"]!.GetValue<int>();
        audio["num_attention_heads"] = hidden + 1;
        var e = LoadFails(new JsonObject { ["audio_config"] = audio });
        Assert.Equal("audio_config.num_attention_heads", e.JsonPath);
        Assert.Contains($"{hidden + 1} does not divide hidden_size {hidden}", e.Message);
    }

    [Fact]
    public void A_context_left_of_zero_is_refused()
    {
        var audio = AudioConfig();
        audio["attention_context_left"] = 0;
        var e = LoadFails(new JsonObject { ["audio_config"] = audio });
        Assert.Equal("audio_config.attention_context_left", e.JsonPath);
        Assert.Contains("must be at least 1, got 0", e.Message);
    }

    [Fact]
    public void A_context_left_of_one_no_past_frames_is_accepted()
    {
        var audio = AudioConfig();
        audio["attention_context_left"] = 1;
        var c = WithConfigFile(new JsonObject { ["audio_config"] = audio }, Gemma4AudioConfig.Load);
        Assert.Equal(1, c.AttentionContextLeft);
        Assert.Equal(c.AttentionChunkSize + c.AttentionContextRight, c.ContextSize);
    }

    [Fact]
    public void A_conv_kernel_size_the_checkpoint_does_not_have_names_the_depthwise_kernel_and_the_config_fields()
    {
        var audio = AudioConfig();
        int k = audio["conv_kernel_size"]!.GetValue<int>();
        audio["conv_kernel_size"] = k + 2;
        var e = ShapeError(audio);
        Assert.Contains(".lconv1d.depthwise_conv1d.weight is ", e.Message);
        Assert.Contains($"{k}] but the config (audio_config.hidden_size, conv_kernel_size) implies ", e.Message);
    }

    [Fact]
    public void A_hidden_size_the_checkpoint_does_not_have_names_input_proj_linear_first()
    {
        var audio = AudioConfig();
        audio["hidden_size"] = audio["hidden_size"]!.GetValue<int>() * 2;
        var e = ShapeError(audio);
        Assert.Contains(".subsample_conv_projection.input_proj_linear.weight is ", e.Message);
        Assert.Contains("but the config (audio_config.subsampling_conv_channels, hidden_size) implies", e.Message);
    }

    [Fact]
    public void An_output_proj_dims_the_checkpoint_does_not_have_names_output_proj()
    {
        var audio = AudioConfig();
        audio["output_proj_dims"] = audio["output_proj_dims"]!.GetValue<int>() + 3;
        var e = ShapeError(audio);
        Assert.Contains(".output_proj.weight is ", e.Message);
        Assert.Contains("but the config (audio_config.output_proj_dims, hidden_size) implies", e.Message);
    }

    [Fact]
    public void A_batch_without_a_valid_frame_has_no_soft_tokens_rather_than_failing()
    {
        var output = new Gemma4AudioModel.Output(Tensor.Zeros(DType.Float32, 2, 3, 5), Tensor.FromArray(new bool[6], 2, 3));
        var tokens = output.ValidSoftTokens();
        Assert.Equal([0, 5], tokens.Shape);
    }

    private static Gemma4AudioModel.Output Encode(Func<Gemma4AudioModel, Gemma4AudioModel.Output> forward)
    {
        using var checkpoint = Checkpoint.Open(Path.GetDirectoryName(ModelConfig)!);
        return forward(new Gemma4AudioModel(new CheckpointWeights(checkpoint), Gemma4AudioConfig.Load(ModelConfig)));
    }

    [Fact]
    public void Features_without_a_batch_axis_are_refused_naming_the_tower_and_the_shape()
    {
        var features = TinyGemma4Towers.AudioInputs(DType.Float32, 1, 61UL).Features.Select(0, 0);   // [T, F]
        var e = Assert.Throws<ArgumentException>(() => Encode(m => m.Forward(features)));
        Assert.Contains("input_features must be [batch, frames, mel_bins], got [", e.Message);
    }

    [Fact]
    public void Without_a_mask_every_frame_of_the_clip_is_valid()
    {
        var features = TinyGemma4Towers.AudioInputs(DType.Float32, 1, 61UL).Features;   // [1, T, F]
        var output = Encode(m => m.Forward(features));
        Assert.Equal(output.SoftTokens.Size(1), output.ValidSoftTokens().Size(0));
    }

    [Fact]
    public void A_mask_of_another_length_than_the_clip_is_refused_naming_both_shapes()
    {
        var features = TinyGemma4Towers.AudioInputs(DType.Float32, 1, 61UL).Features;   // [1, T, F]
        var mask = Tensor.FromArray(Enumerable.Repeat(true, features.Size(1) - 1).ToArray(), 1, features.Size(1) - 1);
        var e = Assert.Throws<ArgumentException>(() => Encode(m => m.Forward(features, mask)));
        Assert.Contains($"input_features_mask [1, {features.Size(1) - 1}] does not match input_features [1, ", e.Message);
    }
}
