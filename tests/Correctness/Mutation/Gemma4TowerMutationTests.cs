using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4.Audio;
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
}
