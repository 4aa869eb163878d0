using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma4;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// Gemma3n and Gemma4 declare from their config every tensor their text model loads, so a width the engine would
/// otherwise take from the weights (laurel_rank, use_double_wide_mlp, vocab_size_per_layer_input) is checked against
/// config.json before a run: the recorded tiny checkpoints fit their configs exactly, and a config that disagrees is
/// named at the tensor, with the config fields the shape comes from.
/// </summary>
public class Gemma3nGemma4TensorsTests
{
    private static string Model(string name) => Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", name);

    private static HfConfig Config(string model, Action<JsonObject>? edit = null)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Model(model), "config.json")))!.AsObject();
        edit?.Invoke(json);
        return HfConfig.Parse(json.ToJsonString(), "config.json");
    }

    private static IReadOnlyList<string> Problems(string model, ModelTensors expected)
    {
        using var checkpoint = Checkpoint.Open(Model(model));
        return CheckpointValidator.Problems(checkpoint, expected);
    }

    [Theory]
    [InlineData("tiny-gemma3n-fp32")]
    [InlineData("tiny-gemma3n-bf16")]
    public void The_recorded_tiny_gemma3n_fits_its_config(string model) =>
        Assert.Empty(Problems(model, Gemma3nTensors.Expected(Gemma3nConfig.Read(Config(model)))));

    [Theory]
    [InlineData("tiny-gemma4-e2b-like-fp32")]
    [InlineData("tiny-gemma4-moe-fp32")]
    [InlineData("tiny-gemma4-e2b-like-mm-fp32")]
    [InlineData("tiny-gemma4-moe-mm-fp32")]
    public void The_recorded_tiny_gemma4_fits_its_config(string model) =>
        Assert.Empty(Problems(model, Gemma4Tensors.Expected(Gemma4TextConfig.From(Config(model)))));

    [Fact]
    public void A_laurel_rank_the_weights_do_not_have_is_named_at_the_laurel_projections()
    {
        var config = Config("tiny-gemma3n-fp32", c => c["text_config"]!["laurel_rank"] = 64);
        var p = Problems("tiny-gemma3n-fp32", Gemma3nTensors.Expected(Gemma3nConfig.Read(config)));
        Assert.Contains("'model.language_model.layers.0.laurel.linear_left.weight' is [4, 32], the config implies [64, 32] (laurel_rank, hidden_size)", p);
    }

    [Fact]
    public void Attention_bias_in_the_config_needs_the_biases_in_the_weights()
    {
        var config = Config("tiny-gemma3n-fp32", c => c["text_config"]!["attention_bias"] = true);
        var p = Problems("tiny-gemma3n-fp32", Gemma3nTensors.Expected(Gemma3nConfig.Read(config)));
        Assert.Contains(p, x => x.StartsWith("'model.language_model.layers.0.self_attn.q_proj.bias' [32] is missing", StringComparison.Ordinal));
    }

    [Fact]
    public void A_config_without_the_double_wide_mlp_is_named_at_the_shared_layers_mlp()
    {
        var config = Config("tiny-gemma4-e2b-like-fp32", c => c["use_double_wide_mlp"] = false);
        var p = Problems("tiny-gemma4-e2b-like-fp32", Gemma4Tensors.Expected(Gemma4TextConfig.From(config)));
        Assert.Contains("'model.layers.2.mlp.gate_proj.weight' is [192, 64], the config implies [96, 64] (intermediate_size, hidden_size)", p);
        Assert.DoesNotContain(p, x => x.Contains("layers.1.mlp", StringComparison.Ordinal));   // not KV-shared: single width either way
    }

    [Fact]
    public void A_per_layer_vocabulary_the_weights_do_not_have_is_named_at_the_per_layer_table()
    {
        var config = Config("tiny-gemma4-e2b-like-fp32", c => c["vocab_size_per_layer_input"] = 262_144);
        var p = Problems("tiny-gemma4-e2b-like-fp32", Gemma4Tensors.Expected(Gemma4TextConfig.From(config)));
        Assert.Contains("'model.embed_tokens_per_layer.weight' is [384, 32], the config implies [262144, 32] " +
                        "(vocab_size_per_layer_input, num_hidden_layers * hidden_size_per_layer_input)", p);
    }
}
