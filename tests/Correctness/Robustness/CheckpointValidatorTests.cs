using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Llama;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// A model declares from its config the tensors it loads (name, shape, dtype); <see cref="CheckpointValidator"/> checks a
/// checkpoint against that before any work starts. Here: the tiny Llama's recorded checkpoint, intact and broken.
/// </summary>
public sealed class CheckpointValidatorTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-validator-" + Guid.NewGuid().ToString("N"));
    private readonly Dictionary<string, Tensor> _weights = new(StringComparer.Ordinal);
    private readonly HfConfig _config;

    public CheckpointValidatorTests()
    {
        var model = Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", "tiny-llama-bias-fp32");   // untied lm_head, biases, head_dim 24
        _config = HfConfig.Load(Path.Combine(model, "config.json"));
        using var ckpt = Checkpoint.Open(model);
        foreach (var n in ckpt.Names) _weights[n] = ckpt.ReadTensor(n);
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private IReadOnlyList<string> Problems()
    {
        SafetensorsWriter.Save(Path.Combine(_dir, "model.safetensors"), _weights);
        using var ckpt = Checkpoint.Open(_dir);
        return CheckpointValidator.Problems(ckpt, LlamaForCausalLM.ExpectedTensors(_config));
    }

    [Fact]
    public void The_recorded_tiny_llama_fits_its_config()
    {
        Assert.Empty(Problems());
        var expected = LlamaForCausalLM.ExpectedTensors(_config);
        Assert.Equal(2 + 4 * (9 + 7) + 1, expected.Tensors.Count()); // embed, 9 per layer and 7 biases (the bias variant), norm, lm_head
    }

    [Fact]
    public void A_misspelt_prefix_is_missing_tensors_with_the_close_unexpected_names()
    {
        var w = _weights["model.layers.3.mlp.up_proj.weight"];
        _weights.Remove("model.layers.3.mlp.up_proj.weight");
        _weights["model.layers.3.mlp.upproj.weight"] = w;
        var p = Problems();
        Assert.Equal(2, p.Count);
        Assert.Equal("'model.layers.3.mlp.up_proj.weight' [128, 64] is missing (close: 'model.layers.3.mlp.upproj.weight')", p[0]);
        Assert.Equal("unexpected tensor 'model.layers.3.mlp.upproj.weight' (close to the missing 'model.layers.3.mlp.up_proj.weight': a misspelt prefix?)", p[1]);
    }

    [Fact]
    public void Wrong_shape_and_dtype_name_the_tensor_and_the_config_fields()
    {
        _weights["model.layers.0.self_attn.k_proj.weight"] = Tensor.Zeros(DType.Float32, 64, 64);
        _weights["model.norm.weight"] = _weights["model.norm.weight"].To(DType.BFloat16);
        var p = Problems();
        Assert.Contains("'model.layers.0.self_attn.k_proj.weight' is [64, 64], the config implies [48, 64] (num_key_value_heads * head_dim, hidden_size)", p);
        Assert.Contains("'model.norm.weight' is BF16, the model's tensors are F32", p);
    }

    [Fact]
    public void A_tied_lm_head_may_be_absent_but_an_untied_one_may_not()
    {
        _weights.Remove("lm_head.weight");
        Assert.Equal(["'lm_head.weight' [200, 64] is missing"], Problems().Select(p => p.Split(" (close")[0]));
    }

    [Fact]
    public void The_mismatch_is_one_line_naming_the_file_and_the_config()
    {
        _weights.Remove("model.layers.2.input_layernorm.weight");
        SafetensorsWriter.Save(Path.Combine(_dir, "model.safetensors"), _weights);
        var e = Assert.Throws<CheckpointMismatchException>(() => CheckpointValidator.Validate(_dir, LlamaForCausalLM.ExpectedTensors(_config)));
        Assert.StartsWith($"{Path.Combine(_dir, "model.safetensors")}: the weights do not match {_config.SourceName} (1 missing)", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Same(e, InputErrors.Find(new AggregateException(new InvalidOperationException("wrapped", e))));
    }

    [Fact]
    public void A_config_claiming_two_billion_layers_is_judged_by_its_first_missing_tensors()
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(_config.SourceName))!.AsObject();
        json["num_hidden_layers"] = int.MaxValue;
        var huge = HfConfig.Parse(json.ToJsonString(), "x/config.json");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        SafetensorsWriter.Save(Path.Combine(_dir, "model.safetensors"), _weights);
        using var ckpt = Checkpoint.Open(_dir);
        var p = CheckpointValidator.Problems(ckpt, LlamaForCausalLM.ExpectedTensors(huge));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"took {sw.Elapsed}");
        Assert.StartsWith("'model.layers.4.input_layernorm.weight' [64] is missing", p[0]);
        Assert.Equal($"(more not checked: the first {CheckpointValidator.MaxProblems} problems are listed)", p[^1]);
    }

    [Theory]
    [InlineData("num_attention_heads", "0", "num_attention_heads must be at least 1, but is 0")]
    [InlineData("hidden_size", "-64", "hidden_size must be at least 1, but is -64")]
    [InlineData("num_key_value_heads", "3", "num_key_value_heads is 3, which does not divide num_attention_heads 4")]
    [InlineData("rope_parameters", """{"rope_type": "yarn-ish", "rope_theta": 10000.0}""", "rope_parameters.rope_type is 'yarn-ish'; the engine's Llama supports default, linear, llama3")]
    [InlineData("hidden_act", "\"swish2\"", "hidden_act unknown activation 'swish2'")]
    [InlineData("rope_parameters", """{"rope_type": "linear", "rope_theta": 10000.0}""", "rope_parameters.factor is missing")]
    [InlineData("vocab_size", "\"200\"", "vocab_size must be an integer, but is a string")]
    public void Config_values_the_engine_cannot_run_name_the_field(string key, string value, string message)
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(_config.SourceName))!.AsObject();
        json[key] = System.Text.Json.Nodes.JsonNode.Parse(value);
        var e = Assert.ThrowsAny<ConfigException>(() => LlamaForCausalLM.ExpectedTensors(HfConfig.Parse(json.ToJsonString(), "x/config.json")));
        Assert.StartsWith($"x/config.json: {message}", e.Message);
    }
}
