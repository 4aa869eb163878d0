using System.Text.Json;
using Harness.Engine.Config;
using Harness.Engine.Models.Gemma3n.Vision;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Gemma3n;

/// <summary>
/// The parts of the engine's MobileNetV5 (Gemma3n's vision tower) the reference comparison does not pin down by itself:
/// the block stack decoded from timm's arch_def, timm's TF-style 'same' padding, the output geometry, and the config
/// refusals. No reference needed.
/// </summary>
public class MobileNetV5Tests
{
    private static MobileNetV5Config Config(string visionJson) =>
        MobileNetV5Config.Read(new ConfigNode(JsonDocument.Parse(visionJson).RootElement.Clone(), "vision_config", "config.json"));

    [Fact]
    public void The_300m_stack_is_timms_84_blocks_in_4_stages_with_only_each_stages_first_block_strided()
    {
        var c = Config("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048}""");
        var blocks = c.Blocks;
        Assert.Equal(84, blocks.Count);
        Assert.Equal([3, 5, 37, 39], blocks.GroupBy(b => b.Stage).Select(g => g.Count()).ToArray());
        Assert.All(blocks, b => Assert.Equal(b.Index == 0 ? 2 : 1, b.Stride));
        Assert.Equal([128, 256, 640, 1280], blocks.GroupBy(b => b.Stage).Select(g => g.Last().OutChannels).ToArray());
        Assert.Equal(64, c.StemChannels);
        Assert.Equal(14, blocks.Count(b => b.Stage == 2 && b.Type == MobileNetV5BlockType.MultiQueryAttention && b is { Heads: 12, KeyDim: 64, KvStride: 2 }));
        Assert.Equal(19, blocks.Count(b => b.Stage == 3 && b.Type == MobileNetV5BlockType.MultiQueryAttention && b is { Heads: 16, KeyDim: 96, KvStride: 1 }));
        // uir_r1_a3_k5_s2_e6_c256: dw_start 3, dw_mid 5, stride 2, mid = make_divisible(128 * 6) = 768
        var first = blocks.First(b => b.Stage == 1);
        Assert.Equal((3, 5, 2, 768), (first.StartKernelSize, first.KernelSize, first.Stride, first.MidChannels));
        Assert.Equal(640 + 1280, c.MsfaInChannels);
    }

    [Fact]
    public void The_channel_multiplier_rounds_every_blocks_width_to_8_and_keeps_the_stem_at_64()
    {
        var c = Config("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"channel_multiplier": 0.0125, "msfa_output_resolution": 2}}""");
        Assert.Equal([8, 8, 8, 16], c.Blocks.GroupBy(b => b.Stage).Select(g => g.Last().OutChannels).ToArray());
        Assert.Equal(64, c.StemChannels);                                    // fix_stem = channel_multiplier < 1.0
        Assert.Equal(24, c.MsfaInChannels);
        // make_divisible(v) = max(8, int(v + 4) // 8 * 8), plus 8 below 0.9 v
        Assert.Equal([8, 16, 16, 24, 40], new[] { 1.0, 11.9, 12.0, 19.2, 38.4 }.Select(v => MobileNetV5Config.MakeDivisible(v)).ToArray());
    }

    [Theory]
    // stride 2 pads as TensorFlow's SAME: the extra row after (Conv2dSame), not PyTorch's k // 2 on both sides
    [InlineData(96, 3, 2, false, 0, 1)]
    [InlineData(96, 5, 2, false, 1, 2)]
    [InlineData(3, 3, 2, false, 1, 1)]                                   // odd size: ceil(3/2) = 2 outputs need 2 more
    [InlineData(96, 3, 2, true, 1, 1)]                                   // the planted fault: symmetric
    [InlineData(96, 5, 2, true, 2, 2)]
    [InlineData(12, 5, 1, false, 2, 2)]                                  // stride 1, odd kernel: static (k - 1) / 2
    [InlineData(12, 1, 1, false, 0, 0)]
    public void Same_padding_is_timms(int size, int kernel, int stride, bool symmetric, int before, int after) =>
        Assert.Equal((before, after), MobileNetV5Conv.SamePadding(size, kernel, stride, symmetric));

    [Fact]
    public void A_96_pixel_image_becomes_2x2_soft_tokens_of_2048_scaled_by_sqrt_2048()
    {
        var c = Config("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"channel_multiplier": 0.0125, "msfa_output_resolution": 2}}""");
        var weights = RandomWeights(c);
        var tower = new MobileNetV5Encoder(new DictionaryWeights(weights), c);
        var output = tower.Forward(Tensor.Uniform(DType.Float32, 3, -1, 1, 2, 3, 96, 96));
        Assert.Equal([2, 2048, 2, 2], output.ShapeArray);
        var tokens = MobileNetV5Encoder.ImageSoftTokens(output, 4);
        Assert.Equal([8, 2048], tokens.ShapeArray);
        // token 1 of image 0 is pixel (0, 1) of every channel, times sqrt(2048)
        Assert.Equal(output.ToFloatArray()[1 + 4 * 7] * Math.Sqrt(2048), tokens.ToFloatArray()[2048 + 7], 1e-3);
        Assert.Throws<ArgumentException>(() => MobileNetV5Encoder.ImageSoftTokens(output, 16));
    }

    [Theory]
    [InlineData("""{"architecture": "mobilenetv5_base", "hidden_size": 2048}""", "vision_config.architecture")]
    [InlineData("""{"hidden_size": 2048}""", "vision_config.architecture")]
    [InlineData("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 1024}""", "vision_config.hidden_size")]
    [InlineData("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"drop_path_rate": 0.1}}""", "vision_config.model_args.drop_path_rate")]
    [InlineData("""{"architecture": "mobilenetv5_300m_enc", "hidden_size": 2048, "model_args": {"channel_multiplier": -1}}""", "vision_config.model_args.channel_multiplier")]
    public void A_vision_config_the_port_does_not_follow_is_one_line_naming_the_field(string json, string path)
    {
        var e = Assert.Throws<ConfigException>(() => Config(json));
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>Seeded weights of every tensor the tower reads (conv weights N(0, 1/fan_in), scales 1 + N(0, 0.2)).</summary>
    internal static Dictionary<string, Tensor> RandomWeights(MobileNetV5Config c, DType dtype = DType.Float32)
    {
        ulong seed = 11;
        return MobileNetV5Encoder.ExpectedTensors(c).ToDictionary(x => x.Name, x => x.Shape.Length == 1
            ? Tensor.Normal(dtype, seed++, 1f, 0.2f, x.Shape)
            : Tensor.Normal(dtype, seed++, 0f, 1f / MathF.Sqrt(x.Shape.Skip(1).Aggregate(1, (a, b) => a * b)), x.Shape));
    }
}
