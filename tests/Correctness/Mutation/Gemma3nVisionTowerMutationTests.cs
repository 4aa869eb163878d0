using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma3n.Vision;
using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Harness.Tests.Correctness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma3n's vision tower (src/Engine/Models/Gemma3n/Vision: MobileNetV5Config.cs, MobileNetV5Encoder.cs) on the recorded
/// tiny tower (fixtures/models/tiny-gemma3n-vision-fp32): what the catalog's vision-tower scenarios, Gemma3nVisionTowerTests
/// and MobileNetV5Tests cannot see, each a Stryker.NET mutant that survived them (notes/issue-21-mutg3ntowers.md), written
/// as the bug report it guards: the standalone gemma3n_vision layout, the refusals' words and boundaries, timm's channel
/// rounding off the tiny multiplier, the tensors the tower reads (exactly the checkpoint's), the recorded modules, the
/// shape errors' config hints, the public blocks' own refusals, and images that are not square or not a multiple of the
/// MSFA's output grid.
/// </summary>
public class Gemma3nVisionTowerMutationTests(ITestOutputHelper log)
{
    private const string T = MobileNetV5Encoder.DefaultPrefix + ".timm_model";

    private static string ModelDir => Path.Combine(Fixtures.DefaultDirectory(), "models", TinyGemma3nVision.ModelName + "-fp32");

    private static T1 WithConfigFile<T1>(JsonNode json, Func<string, T1> load)
    {
        var path = Path.Combine(Path.GetTempPath(), $"g3n-vision-mut-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json.ToJsonString());
        try { return load(path); }
        finally { File.Delete(path); }
    }

    private static ConfigException LoadFails(JsonNode json) =>
        WithConfigFile(json, path => Assert.Throws<ConfigException>(() => MobileNetV5Config.Load(path)));

    private static MobileNetV5Config Read(string visionJson) =>
        MobileNetV5Config.Read(new ConfigNode(JsonDocument.Parse(visionJson).RootElement.Clone(), "vision_config", "config.json"));

    private static ConfigException Refused(string visionJson) => Assert.Throws<ConfigException>(() => Read(visionJson));

    private static MobileNetV5Config Tiny => Gemma3nVisionTowerScenario.TinyConfig;

    // ---- MobileNetV5Config ----

    [Fact]
    public void A_standalone_gemma3n_vision_config_is_read_from_its_root_and_its_fields_are_named_without_a_prefix()
    {
        var vision = TinyGemma3nVision.VisionConfig();
        vision["model_type"] = "gemma3n_vision";
        var c = WithConfigFile(vision, MobileNetV5Config.Load);
        Assert.Equal((2048, 0.025, 2), (c.HiddenSize, c.ChannelMultiplier, c.MsfaOutputResolution));

        vision.Remove("hidden_size");
        Assert.Equal("hidden_size", LoadFails(vision).JsonPath);
    }

    [Fact]
    public void A_nested_vision_config_is_named_by_its_path_from_the_document_root()
    {
        var vision = TinyGemma3nVision.VisionConfig();
        vision.Remove("hidden_size");
        Assert.Equal("vision_config.hidden_size", LoadFails(new JsonObject { ["model_type"] = "gemma3n", ["vision_config"] = vision }).JsonPath);
    }

    [Fact]
    public void A_config_without_vision_config_says_the_model_has_no_vision_tower()
    {
        var e = LoadFails(new JsonObject { ["model_type"] = "gemma3n" });
        Assert.Equal("vision_config", e.JsonPath);
        Assert.Contains("vision_config is missing: the model has no vision tower", e.Message);
    }

    [Fact]
    public void A_missing_config_file_is_named_as_the_config_file()
    {
        var path = Path.Combine(Path.GetTempPath(), $"g3n-vision-absent-{Guid.NewGuid():N}.json");
        Assert.Contains("no such config file", Assert.Throws<InputException>(() => MobileNetV5Config.Load(path)).Message);
    }

    [Fact]
    public void Another_architecture_is_refused_naming_the_one_the_engine_ports()
    {
        var e = Refused("""{"architecture": "mobilenetv5_base", "hidden_size": 2048}""");
        Assert.Equal("config.json: vision_config.architecture is 'mobilenetv5_base': the engine's Gemma3n vision tower is timm's " +
                     "mobilenetv5_300m_enc (MobileNetV5Encoder) only", e.Message);
    }

    [Fact]
    public void A_model_arg_the_port_does_not_follow_is_refused_naming_the_two_it_reads()
    {
        var e = Refused("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"drop_path_rate": 0.1}}""");
        Assert.Equal("config.json: vision_config.model_args.drop_path_rate is a timm.create_model argument the engine's mobilenetv5_300m_enc " +
                     "does not follow (it reads channel_multiplier and msfa_output_resolution)", e.Message);
    }

    [Theory]
    [InlineData("0", "vision_config.model_args.channel_multiplier must be a positive number, got 0")]
    [InlineData("-0.5", "vision_config.model_args.channel_multiplier must be a positive number, got -0.5")]
    public void A_channel_multiplier_that_is_not_positive_is_refused(string value, string words)
    {
        var e = Refused("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"channel_multiplier": """ + value + "}}");
        Assert.Equal("vision_config.model_args.channel_multiplier", e.JsonPath);
        Assert.Contains(words, e.Message);
    }

    [Fact]
    public void An_msfa_output_resolution_of_zero_is_refused_and_one_is_accepted()
    {
        var e = Refused("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"msfa_output_resolution": 0}}""");
        Assert.Equal("vision_config.model_args.msfa_output_resolution", e.JsonPath);
        Assert.Contains("must be at least 1, got 0", e.Message);
        Assert.Equal(1, Read("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"msfa_output_resolution": 1}}""").MsfaOutputResolution);
    }

    [Fact]
    public void A_hidden_size_other_than_the_towers_output_width_is_refused_naming_both()
    {
        var e = Refused("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 1024}""");
        Assert.Equal("config.json: vision_config.hidden_size is 1024, but mobilenetv5_300m_enc's output (MobileNetV5Encoder.num_features) " +
                     "is 2048 channels wide", e.Message);
    }

    [Fact]
    public void Above_a_multiplier_of_one_the_stem_is_rounded_too()
    {
        // round_chs_fn(stem_size) unless fix_stem (channel_multiplier < 1.0): 64 * 1.5 = 96
        var c = Read("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"channel_multiplier": 1.5}}""");
        Assert.Equal(96, c.StemChannels);
        Assert.Equal([192, 384, 960, 1920], c.Blocks.GroupBy(b => b.Stage).Select(g => g.Last().OutChannels).ToArray());
    }

    [Fact]
    public void A_multiplier_of_zero_keeps_every_width_as_timms_round_channels_does()
    {
        // round_channels: `if not multiplier: return channels` (the config refuses 0; the record itself follows timm)
        var c = new MobileNetV5Config { HiddenSize = 2048, ChannelMultiplier = 0, MsfaOutputResolution = 16 };
        Assert.Equal(100, c.RoundChannels(100));
        Assert.Equal([128, 256, 640, 1280], c.Blocks.GroupBy(b => b.Stage).Select(g => g.Last().OutChannels).ToArray());
    }

    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(32)]
    public void Make_divisible_adds_a_divisor_only_strictly_below_the_round_limit(int n)
    {
        // make_divisible: `if new_v < round_limit * v: new_v += divisor`. At v = n / 0.9 the rounded value n is exactly
        // 0.9 v (in binary64 too): not below it, so n stays
        double v = n / 0.9;
        Assert.Equal((double)n, 0.9 * v);
        Assert.Equal(n, MobileNetV5Config.MakeDivisible(v));
    }

    [Theory]
    [InlineData(12, 4, 1, 1, 2)]      // an even kernel at stride 1 is not timm's static pad: pad_same's 3 = 1 before, 2 after
    [InlineData(12, 2, 1, 0, 1)]
    public void Same_padding_of_an_even_kernel_at_stride_1_is_dynamic_as_timms(int size, int kernel, int stride, int before, int after) =>
        Assert.Equal((before, after), MobileNetV5Conv.SamePadding(size, kernel, stride));

    // ---- MobileNetV5Encoder: what it reads and records ----

    [Fact]
    public void The_tensors_the_tower_reads_are_exactly_the_checkpoints_with_their_shapes()
    {
        using var checkpoint = Checkpoint.Open(ModelDir);
        var stored = checkpoint.Names.Where(n => n.StartsWith(MobileNetV5Encoder.DefaultPrefix + ".", StringComparison.Ordinal))
            .ToDictionary(n => n, n => checkpoint.GetInfo(n).Shape.ToArray());
        var expected = MobileNetV5Encoder.ExpectedTensors(Tiny).ToList();
        Assert.Equal(expected.Count, expected.Select(x => x.Name).Distinct().Count());
        Assert.Equal(stored.Keys.Order(StringComparer.Ordinal), expected.Select(x => x.Name).Order(StringComparer.Ordinal));
        Assert.All(expected, x => Assert.Equal(stored[x.Name], x.Shape));
    }

    /// <summary>HF's module paths: the stem, each block (an MQA block's attn before it), the MSFA, the tower.</summary>
    private static List<string> ExpectedModules()
    {
        var list = new List<string> { $"{T}.conv_stem" };
        int[] perStage = [3, 5, 37, 39];
        for (int s = 0; s < 4; s++)
            for (int i = 0; i < perStage[s]; i++)
            {
                // stage 2: 9 UIR then 14 (MQA, UIR) pairs from block 9; stage 3: 1 UIR then 19 pairs from block 1
                bool mqa = s == 2 ? i >= 9 && (i - 9) % 2 == 0 : s == 3 && i >= 1 && (i - 1) % 2 == 0;
                if (mqa) list.Add($"{T}.blocks.{s}.{i}.attn");
                list.Add($"{T}.blocks.{s}.{i}");
            }
        list.AddRange([$"{T}.msfa", MobileNetV5Encoder.DefaultPrefix]);
        return list;
    }

    [Fact]
    public void The_recorded_modules_are_hfs_paths_in_forward_order_and_the_tower_records_each_once()
    {
        var expected = ExpectedModules();
        Assert.Equal(1 + 84 + 33 + 2, expected.Count);
        Assert.Equal(expected, MobileNetV5Encoder.Modules(Tiny));

        var sink = new RecordingSink();
        Encode(TinyGemma3nVision.Pixels(DType.Float32, images: 1), sink: sink);
        Assert.Equal(expected, sink.Names);
        Assert.Equal([1, 2048, 2, 2], sink.Shapes[MobileNetV5Encoder.DefaultPrefix]);
        Assert.Equal([1, 64, 32, 32], sink.Shapes[$"{T}.conv_stem"]);                 // channels first, as timm's
    }

    private sealed class RecordingSink : IActivationSink
    {
        public List<string> Names { get; } = [];
        public Dictionary<string, int[]> Shapes { get; } = [];
        public bool Wants(string module) => true;
        public void Record(string module, int rank, Tensor value, ShardSpec shard)
        {
            Names.Add(module);
            Shapes[module] = value.ShapeArray;
        }
    }

    private static Tensor Encode(Tensor pixels, MobileNetV5Config? config = null, IActivationSink? sink = null, MatmulOptions? matmul = null)
    {
        using var checkpoint = Checkpoint.Open(ModelDir);
        return new MobileNetV5Encoder(new CheckpointWeights(checkpoint), config ?? Tiny, sink, matmul: matmul).Forward(pixels);
    }

    /// <summary>
    /// The catalog's fp32 scenario judges every module; this judges the tower's output alone (no recording, no per-module
    /// comparison), the cheapest check a wrong number anywhere in the tower fails: the replay runs it before the catalog.
    /// </summary>
    [Fact]
    public void The_towers_fp32_output_for_the_catalogs_images_is_the_recorded_references()
    {
        using var invariant = ComputeSettings.UseBatchInvariant();
        var reference = CatalogContexts.Recorded.Reference(new Gemma3nVisionTowerScenario(DType.Float32)).Tensors[MobileNetV5Encoder.DefaultPrefix].ToDoubleArray();
        var output = Encode(TinyGemma3nVision.Pixels(DType.Float32));                     // [2, 2048, 2, 2]
        Assert.Equal([2, 2048, 2, 2], output.ShapeArray);
        var o = output.ToDoubleArray();
        double num = 0, den = 0;
        for (int i = 0; i < o.Length; i++) { num += (o[i] - reference[i]) * (o[i] - reference[i]); den += reference[i] * reference[i]; }
        double rel = Math.Sqrt(num / den);
        log.WriteLine($"relative L2 error against timm: {rel:E3}");
        Assert.True(rel < 1e-5, $"the tower's output is {rel:E2} (relative L2) off the recorded timm output");
    }

    [Fact]
    public void Pixel_values_without_a_batch_axis_are_refused_naming_the_tower_and_the_shape()
    {
        var e = Assert.Throws<ArgumentException>(() => Encode(Tensor.Zeros(DType.Float32, 3, 64, 64)));
        Assert.Equal("model.vision_tower: pixel_values must be [batch, 3, height, width], got [3, 64, 64]", e.Message);
    }

    [Fact]
    public void Pixel_values_channels_last_are_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => Encode(Tensor.Zeros(DType.Float32, 1, 64, 64, 3)));
        Assert.Equal("model.vision_tower: pixel_values must be [batch, 3, height, width], got [1, 64, 64, 3]", e.Message);
    }

    [Fact]
    public void Soft_tokens_that_are_not_the_towers_grid_are_refused_naming_both()
    {
        var e = Assert.Throws<ArgumentException>(() => MobileNetV5Encoder.ImageSoftTokens(Tensor.Zeros(DType.Float32, 1, 2048, 2, 2), 16));
        Assert.Equal("the vision tower's output [1, 2048, 2, 2] is not vision_soft_tokens_per_image 16 tokens an image", e.Message);
    }

    [Theory]
    // a wide and a tall image: the last stage is smaller than stage 2 along one side only, and is resized along it; the
    // MSFA then pools that grid to 1 x 1 (stage 2: 4 x 1 or 1 x 4)
    [InlineData(64, 16)]
    [InlineData(16, 64)]
    public void An_image_that_is_not_square_is_fused_along_the_side_that_shrank_and_pooled_to_the_output_grid(int height, int width)
    {
        var pixels = Tensor.Uniform(DType.Float32, 5, -1, 1, 1, 3, height, width);
        var sink = new RecordingSink();
        var output = Encode(pixels, Tiny with { MsfaOutputResolution = 1 }, sink);
        Assert.Equal([1, 2048, 1, 1], output.ShapeArray);
        Assert.Equal([1, 640 / 40, height / 16, width / 16], sink.Shapes[$"{T}.blocks.2.36"]);
        Assert.All(output.ToFloatArray(), v => Assert.True(float.IsFinite(v)));
    }

    [Theory]
    [InlineData(48, 48)]          // stage 2 is 3 x 3: no multiple of 2
    [InlineData(48, 64)]          // 3 x 4: the height alone
    [InlineData(64, 48)]          // 4 x 3: the width alone
    public void A_feature_map_that_is_no_multiple_of_the_output_grid_is_refused_not_resized_bilinearly(int height, int width)
    {
        var pixels = Tensor.Uniform(DType.Float32, 5, -1, 1, 1, 3, height, width);
        var failed = Assert.Throws<ModuleFailedException>(() => Encode(pixels));
        Assert.Equal($"{T}.msfa", failed.Module);
        var e = Assert.IsType<NotSupportedException>(failed.InnerException);
        Assert.Equal($"{T}.msfa: a {height / 16}x{width / 16} feature map is no multiple of msfa_output_resolution 2: timm resizes it " +
                     "bilinearly, which the engine does not port (give an image whose size / 16 is a multiple of it)", e.Message);
    }

    // ---- shape errors name the config fields ----

    /// <summary>The recorded checkpoint with one tensor replaced.</summary>
    private sealed class Replaced(IWeightSource inner, string name, Tensor value) : IWeightSource
    {
        public bool Contains(string n) => inner.Contains(n);
        public Tensor Get(string n) => n == name ? value : inner.Get(n);
    }

    [Theory]
    [InlineData(T + ".conv_stem.conv.bias", new[] { 63 }, "[63] but the config (vision_config.model_args.channel_multiplier) implies [64]")]
    [InlineData(T + ".conv_stem.conv.weight", new[] { 64, 3, 5, 5 }, "[64, 3, 5, 5] but the config (vision_config.model_args.channel_multiplier) implies [64, 3, 3, 3]")]
    [InlineData(T + ".conv_stem.bn.weight", new[] { 63 }, "[63] but the config (vision_config.model_args.channel_multiplier) implies [64]")]
    [InlineData(T + ".blocks.1.1.layer_scale.gamma", new[] { 7 }, "[7] but the config (vision_config.model_args.channel_multiplier) implies [8]")]
    [InlineData(T + ".msfa.norm.weight", new[] { 2047 }, "[2047] but the config (vision_config.hidden_size) implies [2048]")]
    [InlineData(T + ".blocks.2.9.norm.weight", new[] { 15 }, "[15] but the config (vision_config.model_args.channel_multiplier) implies [16]")]
    [InlineData(T + ".blocks.2.9.attn.value.norm.weight", new[] { 15 }, "[15] but the config (vision_config.model_args.channel_multiplier) implies [16]")]
    public void A_checkpoint_tensor_of_another_shape_is_named_with_the_field_that_sizes_it(string name, int[] shape, string words)
    {
        using var checkpoint = Checkpoint.Open(ModelDir);
        var weights = new Replaced(new CheckpointWeights(checkpoint), name, Tensor.Zeros(DType.Float32, shape));
        var e = Assert.Throws<ArgumentException>(() => new MobileNetV5Encoder(weights, Tiny));
        Assert.Equal($"{name} is {words}", e.Message);
    }

    // ---- the public blocks: the MSFA's noskip, and the refusals of what the 300m stack never builds ----

    [Fact]
    public void The_msfa_ffn_never_adds_its_input_back_even_where_its_input_is_2048_wide()
    {
        // timm's MobileNetV5MultiScaleFusionAdapter builds its ffn with noskip=True. At channel_multiplier 1.0667 the fused
        // stages are 680 + 1368 = 2048 wide, so in_chs == out_chs and stride 1: has_skip would hold without noskip. With
        // every ffn weight zero the ffn's output is 0 and the MSFA's RmsNorm2d of it is 0; a residual would give norm(x).
        var c = new MobileNetV5Config { HiddenSize = 2048, ChannelMultiplier = 1.0667, MsfaOutputResolution = 1 };
        Assert.Equal(2048, c.MsfaInChannels);
        Tensor Ones(int n) => Tensor.FromArray(Enumerable.Repeat(1f, n).ToArray(), n);
        var w = new DictionaryWeights(new Dictionary<string, Tensor>
        {
            ["m.ffn.pw_exp.conv.weight"] = Tensor.Zeros(DType.Float32, 4096, 2048, 1, 1), ["m.ffn.pw_exp.bn.weight"] = Ones(4096),
            ["m.ffn.pw_proj.conv.weight"] = Tensor.Zeros(DType.Float32, 2048, 4096, 1, 1), ["m.ffn.pw_proj.bn.weight"] = Ones(2048),
            ["m.norm.weight"] = Ones(2048),
        });
        var msfa = new MobileNetV5Msfa(w, "m", c, Ctx);
        var output = msfa.Forward([Tensor.Uniform(DType.Float32, 1, 0.5f, 1, 1, 1, 1, 680), Tensor.Uniform(DType.Float32, 2, 0.5f, 1, 1, 1, 1, 1368)]);
        Assert.Equal([1, 1, 1, 2048], output.ShapeArray);
        Assert.All(output.ToFloatArray(), v => Assert.Equal(0f, v));
    }


    private static readonly MobileNetV5Conv.Context Ctx = new(MatmulOptions.Default, false);

    [Fact]
    public void A_depthwise_conv_that_changes_its_channel_count_is_refused()
    {
        var w = new DictionaryWeights(new Dictionary<string, Tensor>
        {
            ["dw.conv.weight"] = Tensor.Zeros(DType.Float32, 8, 1, 3, 3), ["dw.bn.weight"] = Tensor.Zeros(DType.Float32, 8),
        });
        var e = Assert.Throws<ArgumentException>(() => new MobileNetV5Conv(w, "dw", 4, 8, 3, 1, depthwise: true, act: false, Ctx));
        Assert.Equal("dw: a depthwise conv keeps its channels (4 -> 8)", e.Message);
    }

    [Fact]
    public void A_strided_uir_block_without_a_depthwise_kernel_is_refused()
    {
        var spec = new MobileNetV5Block(MobileNetV5BlockType.UniversalInvertedResidual, 1, 0, 8, 8, 2, 0, 0, 2.0, 0, 0, 0, 1);
        var w = new DictionaryWeights(new Dictionary<string, Tensor>
        {
            ["u.pw_exp.conv.weight"] = Tensor.Zeros(DType.Float32, 16, 8, 1, 1), ["u.pw_exp.bn.weight"] = Tensor.Zeros(DType.Float32, 16),
            ["u.pw_proj.conv.weight"] = Tensor.Zeros(DType.Float32, 8, 16, 1, 1), ["u.pw_proj.bn.weight"] = Tensor.Zeros(DType.Float32, 8),
        });
        var e = Assert.Throws<ArgumentException>(() => new MobileNetV5UniversalInvertedResidual(w, "u", spec, Ctx, layerScale: false));
        Assert.Equal("u: a strided UIR block needs a depthwise kernel", e.Message);
    }

    [Fact]
    public void A_strided_multi_query_attention_block_is_refused()
    {
        var spec = new MobileNetV5Block(MobileNetV5BlockType.MultiQueryAttention, 2, 1, 8, 8, 2, 3, 0, 1.0, 2, 4, 4, 1);
        var e = Assert.Throws<ArgumentException>(() =>
            new MobileNetV5MobileAttention(new DictionaryWeights(new Dictionary<string, Tensor>()), "m", spec, Ctx, NoCapture.Instance));
        Assert.Equal("m: MobileAttention with stride 2 (query strides) is not in mobilenetv5_300m_enc", e.Message);
    }
}
