using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Common;
using Harness.Engine.Models.Gemma3n.Audio;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Gemma3n's audio tower (the engine's Gemma3nAudioEncoder against HF's, recorded on tiny-gemma3n-audio): each planted bug
/// is caught at its module in fp32 and bf16, every config field it reads is observable, a bad config is one line, and a
/// clip encodes to the same bits alone or in a batch. Offline on the recorded fixtures.
/// </summary>
[Collection(SerialCollection.Name)]
public class Gemma3nAudioTowerTests(ITestOutputHelper output)
{
    private static string ModelDir(DType dtype) =>
        Path.Combine(Fixtures.DefaultDirectory(), "models", $"{TinyGemma3nAudio.ModelName}-{(dtype == DType.Float32 ? "fp32" : "bf16")}");

    [Theory]
    [InlineData(DType.Float32, Faults.CumulativeNormPlainMean, "model.audio_tower.subsample_conv_projection.conv_0")]
    [InlineData(DType.BFloat16, Faults.CumulativeNormPlainMean, "model.audio_tower.subsample_conv_projection.conv_0")]
    [InlineData(DType.Float32, Faults.UsmRelShiftSkipped, "model.audio_tower.conformer.0.attention.attn")]
    [InlineData(DType.BFloat16, Faults.UsmRelShiftSkipped, "model.audio_tower.conformer.0.attention.attn")]
    public void A_planted_tower_bug_fails_the_comparison_first_at_its_module(DType dtype, string fault, string module)
    {
        var clean = ScenarioRunner.Run(new Gemma3nAudioTowerScenario(dtype), CatalogContexts.Recorded).Result;
        Assert.True(clean.Passed, clean.Reason);
        var result = ScenarioRunner.Run(new Gemma3nAudioTowerScenario(dtype, fault), CatalogContexts.Recorded).Result;
        output.WriteLine(result.Reason);
        Assert.False(result.ComparisonPassed, $"{fault} planted, yet the comparison passed");
        Assert.Equal(module, result.FirstBadModule);
    }

    [Fact]
    public void The_cumulative_norm_uses_every_frame_so_far_and_the_plain_mean_only_differs_after_the_first()
    {
        // frame 0 alone; frame 1's statistics include frame 0: a plain group norm equals it on frame 0 only
        var x = Tensor.Normal(DType.Float32, 5, 0, 1, 1, 3, 4, 2);
        var scale = Tensor.FromArray(new float[] { 1.5f, 0.5f }, 2);
        var cumulative = Gemma3nAudioSscpConvBlock.CumulativeGroupNorm(x, scale, 1e-3);
        var plain = Gemma3nAudioSscpConvBlock.CumulativeGroupNorm(x, scale, 1e-3, plainMean: true);
        Assert.True(cumulative.Select(1, 0).BitwiseEquals(plain.Select(1, 0)));
        Assert.False(cumulative.Select(1, 2).BitwiseEquals(plain.Select(1, 2)));

        // frame 1 by hand: mean and variance of frames 0..1, frame 0's squared deviations from ITS OWN cumulative mean
        var v = x.ToFloatArray();
        double m0 = v.Take(8).Average(), m1 = v.Take(16).Average();
        double sq = v.Take(8).Sum(a => (a - m0) * (a - m0)) + v.Skip(8).Take(8).Sum(a => (a - m1) * (a - m1));
        double expected = (v[8] - m1) / Math.Sqrt(sq / 16 + 1e-3) * 1.5;
        Assert.Equal(expected, cumulative.ToFloatArray()[8], 1e-5);
    }

    [Fact]
    public void The_relative_shift_moves_each_query_row_by_its_offset_in_the_block()
    {
        // term_bd [1, 1, 1, W=2, F=3] with C = 3 (pad each row to C + 1 = 4, read the flat 8 values as 2 rows of 3 and the
        // last one dropped): row 0 stays [1, 2, 3], row 1 moves right by one, [0, 4, 5] (Transformer-XL appendix B). The
        // planted bug pads to C and reads the rows unshifted.
        var bd = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 1, 1, 1, 2, 3);
        Assert.Equal(new float[] { 1, 2, 3, 0, 4, 5 }, UsmLocalAttention.RelShift(bd, 3).ToFloatArray());
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, UsmLocalAttention.RelShift(bd, 3, skipped: true).ToFloatArray());
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void With_batch_invariant_mode_a_clip_encodes_to_the_same_bits_alone_or_beside_a_padded_one(DType dtype)
    {
        using var invariant = ComputeSettings.UseBatchInvariant();
        var dir = ModelDir(dtype);
        using var checkpoint = Checkpoint.Open(dir);
        var model = new Gemma3nAudioEncoder(new CheckpointWeights(checkpoint), Gemma3nAudioConfig.Load(Path.Combine(dir, "config.json")));
        var (features, mask) = TinyGemma3nAudio.Inputs(dtype);                        // clip 0 full, clip 1 padded
        var both = model.Forward(features, Gemma3nScenario.Flags(mask));
        var alone = model.Forward(features.Narrow(0, 0, 1).Contiguous());
        Assert.True(alone.Encodings.Select(0, 0).BitwiseEquals(both.Encodings.Select(0, 0)), "clip 0 differs alone and in the batch");
        // the padded clip: 12 of 40 frames padded -> subsampled frames from 14 on, reduced by 3: tokens 5 and 6 are padding, zero
        Assert.Equal([false, false, false, false, false, true, true], both.Padding.Skip(7).ToArray());
        Assert.All(both.Encodings.Select(0, 1).Narrow(0, 5, 2).ToFloatArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void A_missing_audio_config_field_names_the_file_and_the_path()
    {
        var path = Path.Combine(Path.GetTempPath(), $"g3n-audio-{Guid.NewGuid():N}.json");
        var audio = TinyGemma3nAudio.AudioConfig();
        audio.Remove("sscp_conv_group_norm_eps");
        File.WriteAllText(path, new System.Text.Json.Nodes.JsonObject { ["model_type"] = "gemma3n", ["audio_config"] = audio }.ToJsonString());
        try
        {
            var e = Assert.Throws<ConfigException>(() => Gemma3nAudioConfig.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("audio_config.sscp_conv_group_norm_eps", e.Message);
        }
        finally { File.Delete(path); }
    }
}

/// <summary>
/// Every Gemma3nAudioConfig field the tower reads matters: the engine built with one field changed (the reference keeps the
/// true config) must fail the fp32 comparison.
/// </summary>
[Collection(SerialCollection.Name)]
public class Gemma3nAudioTowerConfigMutationTests(ITestOutputHelper output)
{
    public static TheoryData<string> Fields()
    {
        var data = new TheoryData<string>();
        foreach (var p in typeof(Gemma3nAudioConfig).GetProperties().Where(p => p.CanWrite)) data.Add(p.Name);
        return data;
    }

    /// <summary>A copy with one property changed: ints +2, doubles x10, lists and (time, frequency) pairs +1 each.</summary>
    private static Gemma3nAudioConfig Mutate(Gemma3nAudioConfig config, string field)
    {
        var copy = config with { };
        var p = typeof(Gemma3nAudioConfig).GetProperty(field)!;
        object v = p.GetValue(config)!;
        object next = v switch
        {
            int i => i + 2,
            double d => d * 10,
            int[] a => a.Select(x => x + 1).ToArray(),
            (int, int)[] pairs => pairs.Select(x => (x.Item1 + 1, x.Item2 + 1)).ToArray(),
            _ => throw new InvalidOperationException($"no mutation for {field} of type {v.GetType().Name}"),
        };
        p.SetValue(copy, next);
        return copy;
    }

    [Theory]
    [MemberData(nameof(Fields))]
    public void Audio_field_changed_in_the_engine_only_is_caught(string field)
    {
        var result = ScenarioRunner.Run(new Gemma3nAudioTowerScenario(DType.Float32) { AudioConfigMutation = c => Mutate(c, field) },
            CatalogContexts.Recorded).Result;
        output.WriteLine($"{field}: {result.Reason}");
        Assert.False(result.ComparisonPassed, $"{field} changed, yet the comparison passed: the engine does not read it, or a wrong value agrees");
    }

    /// <summary>HF's library defaults (Gemma3nAudioConfig(), E4B's), what `harness run --config-mutations` gives the engine.</summary>
    public static TheoryData<string> Defaults() => Fields();

    private static Gemma3nAudioConfig LibraryDefault(Gemma3nAudioConfig c, string field) => field switch
    {
        nameof(Gemma3nAudioConfig.HiddenSize) => c with { HiddenSize = 1536 },
        nameof(Gemma3nAudioConfig.InputFeatSize) => c with { InputFeatSize = 128 },
        nameof(Gemma3nAudioConfig.RmsNormEps) => c with { RmsNormEps = 1e-6 },
        nameof(Gemma3nAudioConfig.GradientClipping) => c with { GradientClipping = 1e10 },
        nameof(Gemma3nAudioConfig.ConfAttentionChunkSize) => c with { ConfAttentionChunkSize = 12 },
        nameof(Gemma3nAudioConfig.ConfAttentionContextLeft) => c with { ConfAttentionContextLeft = 13 },
        nameof(Gemma3nAudioConfig.ConfAttentionContextRight) => c with { ConfAttentionContextRight = 0 },
        nameof(Gemma3nAudioConfig.ConfAttentionLogitCap) => c with { ConfAttentionLogitCap = 50 },
        nameof(Gemma3nAudioConfig.ConfNumAttentionHeads) => c with { ConfNumAttentionHeads = 8 },
        nameof(Gemma3nAudioConfig.ConfNumHiddenLayers) => c with { ConfNumHiddenLayers = 12 },
        nameof(Gemma3nAudioConfig.ConfConvKernelSize) => c with { ConfConvKernelSize = 5 },
        nameof(Gemma3nAudioConfig.ConfReductionFactor) => c with { ConfReductionFactor = 4 },
        nameof(Gemma3nAudioConfig.ConfResidualWeight) => c with { ConfResidualWeight = 0.5 },
        nameof(Gemma3nAudioConfig.SscpConvChannelSize) => c with { SscpConvChannelSize = [128, 32] },
        nameof(Gemma3nAudioConfig.SscpConvGroupNormEps) => c with { SscpConvGroupNormEps = 1e-3 },
        nameof(Gemma3nAudioConfig.SscpConvKernelSize) => c with { SscpConvKernelSize = [(3, 3), (3, 3)] },
        nameof(Gemma3nAudioConfig.SscpConvStrideSize) => c with { SscpConvStrideSize = [(2, 2), (2, 2)] },
        _ => throw new InvalidOperationException($"no library default listed for {field}"),
    };

    /// <summary>The tiny model sits off every default: an engine that read HF's default instead of the field fails.</summary>
    [Theory]
    [MemberData(nameof(Defaults))]
    public void Audio_field_at_its_library_default_in_the_engine_only_is_caught(string field)
    {
        var result = ScenarioRunner.Run(new Gemma3nAudioTowerScenario(DType.Float32) { AudioConfigMutation = c => LibraryDefault(c, field) },
            CatalogContexts.Recorded).Result;
        output.WriteLine($"{field}: {result.Reason}");
        Assert.False(result.ComparisonPassed, $"{field} at HF's default, yet the comparison passed");
    }
}
