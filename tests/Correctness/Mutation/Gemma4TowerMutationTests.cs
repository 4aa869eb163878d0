using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma4's audio tower (src/Engine/Models/Gemma4/Audio: its config and model on the recorded tiny tower checkpoint,
/// fixtures/models/gemma4-towers-e2b-like-fp32; Gemma4ClippableLinear and Gemma4TowerKernels, shared with the vision tower,
/// on hand-made weights): the checks the offline catalog and Gemma4TowerTests cannot make, each a Stryker.NET mutant that
/// survived them (notes/issue-21-muttower.md, notes/issue-21-mutg4towers.md), written as the bug report it guards.
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

    // ---- mutg4towers (notes/issue-21-mutg4towers.md): the 20 survivors of the first replay ----

    /// <summary>The checkpoint with one tensor replaced.</summary>
    private sealed class Replaced(IWeightSource inner, string name, Func<Tensor, Tensor> replace) : IWeightSource
    {
        public bool Contains(string n) => inner.Contains(n);
        public Tensor Get(string n) => n == name ? replace(inner.Get(n)) : inner.Get(n);
    }

    private static Gemma4AudioModel.Output Encode(Func<IWeightSource, IWeightSource> edit, Tensor features, Tensor? mask = null)
    {
        using var checkpoint = Checkpoint.Open(Path.GetDirectoryName(ModelConfig)!);
        var model = new Gemma4AudioModel(edit(new CheckpointWeights(checkpoint)), Gemma4AudioConfig.Load(ModelConfig));
        return model.Forward(features, mask);
    }

    [Fact]
    public void Mel_bins_the_subsampling_does_not_reduce_to_channels0_over_4_are_refused_at_input_proj_linear_naming_the_rule()
    {
        // 32 mel bins instead of 16: ceil(ceil(32/2)/2) = 8 bins x 6 channels = 48 values per frame; input_proj_linear takes
        // 16/4 x 6 = 24. The failure is the subsample_conv_projection module's (the name the harness reports).
        var features = Tensor.Normal(DType.Float32, 61, 0, 1, 1, TinyGemma4Towers.Frames, 2 * TinyGemma4Towers.MelBins);   // [1, 32, 32]
        var e = Assert.Throws<ModuleFailedException>(() => Encode(w => w, features));
        Assert.Equal("model.audio_tower.subsample_conv_projection", e.Module);
        Assert.Equal("model.audio_tower.subsample_conv_projection.input_proj_linear: the subsampled features have 48 values per frame " +
            "(8 mel bins x 6 channels) but the layer takes 24 (channels[0]/4 x channels[1]): " +
            "the mel bin count F must satisfy ceil(ceil(F/2)/2) == 16/4", e.InnerException!.Message);
    }

    [Fact]
    public void An_output_proj_bias_of_the_wrong_length_fails_in_the_output_proj_module()
    {
        // output_proj.bias is read as the checkpoint has it: 39 values against 40 outputs fail the bias add, named output_proj
        var features = TinyGemma4Towers.AudioInputs(DType.Float32, 1, 61UL).Features;   // [1, T, F]
        var e = Assert.Throws<ModuleFailedException>(() => Encode(
            w => new Replaced(w, "model.audio_tower.output_proj.bias", t => t.Narrow(0, 0, 39).Contiguous()), features));
        Assert.Equal("model.audio_tower.output_proj", e.Module);
    }

    [Fact]
    public void A_mask_that_is_not_bool_is_refused_naming_its_dtype_and_shape()
    {
        // input_features_mask as the processor's int64 0/1 must be converted by the caller (the scenarios do): refused, not reinterpreted
        var output = new Gemma4AudioModel.Output(Tensor.Zeros(DType.Float32, 2, 3, 5), Tensor.FromArray(new long[] { 1, 1, 1, 1, 0, 0 }, 2, 3));
        var e = Assert.Throws<ArgumentException>(() => output.ValidSoftTokens());
        Assert.Equal("expected a bool mask, got int64 [2, 3]", e.Message);
    }

    [Fact]
    public void A_checkpoint_tensor_of_another_shape_is_refused_naming_both_shapes_and_the_config_field()
    {
        var t = Tensor.Zeros(DType.Float32, 2, 3);
        Assert.Same(t, Gemma4TowerKernels.Expect(t, "w", [2, 3], "f"));
        var e = Assert.Throws<ArgumentException>(() => Gemma4TowerKernels.Expect(t, "model.x.weight", [3, 2], "audio_config.f"));
        Assert.Equal("model.x.weight is [2, 3] but the config (audio_config.f) implies [3, 2]", e.Message);
    }

    /// <summary>A clippable linear "p" with weight [3, 4] (out 3, in 4): w[o, i] = o + i / 10.</summary>
    private static Dictionary<string, Tensor> LinearWeights(string weightName, bool bounds)
    {
        var d = new Dictionary<string, Tensor>
        {
            [weightName] = Tensor.FromArray(Enumerable.Range(0, 12).Select(k => k / 4 + k % 4 / 10f).ToArray(), 3, 4),
        };
        if (bounds)
        {
            d["p.input_min"] = Tensor.FromArray(new[] { -0.5f }, []);
            d["p.input_max"] = Tensor.FromArray(new[] { 0.5f }, []);
            d["p.output_min"] = Tensor.FromArray(new[] { -1f }, []);
            d["p.output_max"] = Tensor.FromArray(new[] { 1f }, []);
        }
        return d;
    }

    [Theory]
    [InlineData(new[] { 12 }, "[12]")]
    [InlineData(new[] { 1, 3, 4 }, "[1, 3, 4]")]
    public void A_clippable_linear_weight_that_is_not_a_matrix_is_refused_naming_it_and_its_shape(int[] shape, string shown)
    {
        var w = new Dictionary<string, Tensor> { ["p.linear.weight"] = Tensor.Zeros(DType.Float32, shape) };
        var e = Assert.Throws<ArgumentException>(() => new Gemma4ClippableLinear(new DictionaryWeights(w), "p", false, MatmulOptions.Default));
        Assert.Equal($"p.linear.weight must be [out_features, in_features], got {shown}", e.Message);
    }

    [Fact]
    public void An_input_of_another_width_is_refused_as_torch_words_it_with_the_flattened_rows()
    {
        // x [2, 3, 5] against a [3, 4] weight (in 4): torch's "mat1 and mat2 shapes cannot be multiplied (6x5 and 4x3)"
        var linear = new Gemma4ClippableLinear(new DictionaryWeights(LinearWeights("p.linear.weight", false)), "p", false, MatmulOptions.Default);
        var e = Assert.Throws<ArgumentException>(() => linear.Forward(Tensor.Zeros(DType.Float32, 2, 3, 5)));
        Assert.Equal("p: mat1 and mat2 shapes cannot be multiplied (6x5 and 4x3)", e.Message);
    }

    [Fact]
    public void The_plain_linear_of_Gemma3ns_audio_tower_reads_prefix_weight_and_no_clip_bounds()
    {
        // Gemma3n's nn.Linear(bias=False): "{prefix}.weight", no input_min/.../output_max (the dictionary has none to give)
        var linear = Gemma4ClippableLinear.Plain(new DictionaryWeights(LinearWeights("p.weight", false)), "p", MatmulOptions.Default);
        var y = linear.Forward(Tensor.FromArray(new[] { 1f, 2f, 3f, 4f }, 1, 4)).ToFloatArray();
        // y[o] = sum_i (o + i/10) * (i + 1) = 10 o + (0 + 0.2 + 0.6 + 1.2) = 10 o + 2: no clip to [-1, 1]
        Assert.Equal(new[] { 2f, 12f, 22f }, y, (a, b) => Math.Abs(a - b) < 1e-5f);
    }

    [Fact]
    public void A_clipped_linear_clamps_its_input_and_its_output_to_the_checkpoints_bounds()
    {
        var linear = new Gemma4ClippableLinear(new DictionaryWeights(LinearWeights("p.linear.weight", true)), "p", true, MatmulOptions.Default);
        // x clamped to [-0.5, 0.5]: [0.5, -0.5, 0.5, 0.1]; y = [0.08, 0.68, 1.28], the last clamped to 1 (unclamped x: 1.77)
        var y = linear.Forward(Tensor.FromArray(new[] { 3f, -2f, 0.7f, 0.1f }, 1, 4)).ToFloatArray();
        Assert.Equal(new[] { 0.08f, 0.68f, 1f }, y, (a, b) => Math.Abs(a - b) < 1e-5f);
    }
}
