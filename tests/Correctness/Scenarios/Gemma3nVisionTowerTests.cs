using Harness.Engine.IO;
using Harness.Engine.Models.Gemma3n.Vision;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Gemma3n's vision tower (the engine's MobileNetV5Encoder against timm's inside HF's TimmWrapperModel, recorded on
/// tiny-gemma3n-vision): each planted bug is caught at its module in fp32 and bf16, every config field the tower reads
/// is observable (changed in the engine only, and at its library default), and an image encodes to the same bits alone
/// or in a batch. Offline on the recorded fixtures.
/// </summary>
[Collection(SerialCollection.Name)]
public class Gemma3nVisionTowerTests(ITestOutputHelper output)
{
    private const string T = MobileNetV5Encoder.DefaultPrefix + ".timm_model";

    private static string ModelDir(DType dtype) =>
        Path.Combine(Fixtures.DefaultDirectory(), "models", $"{TinyGemma3nVision.ModelName}-{(dtype == DType.Float32 ? "fp32" : "bf16")}");

    [Theory]
    [InlineData(DType.Float32, Faults.MobileNetSamePadSymmetric, T + ".conv_stem")]
    [InlineData(DType.BFloat16, Faults.MobileNetSamePadSymmetric, T + ".conv_stem")]
    [InlineData(DType.Float32, Faults.MobileNetUirResidualDropped, T + ".blocks.1.1")]
    [InlineData(DType.BFloat16, Faults.MobileNetUirResidualDropped, T + ".blocks.1.1")]
    public void A_planted_tower_bug_fails_the_comparison_first_at_its_module(DType dtype, string fault, string module)
    {
        var clean = ScenarioRunner.Run(new Gemma3nVisionTowerScenario(dtype), CatalogContexts.Recorded).Result;
        Assert.True(clean.Passed, clean.Reason);
        var result = ScenarioRunner.Run(new Gemma3nVisionTowerScenario(dtype, fault), CatalogContexts.Recorded).Result;
        output.WriteLine(result.Reason);
        Assert.False(result.ComparisonPassed, $"{fault} planted, yet the comparison passed");
        Assert.Equal(module, result.FirstBadModule);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void With_batch_invariant_mode_an_image_encodes_to_the_same_bits_alone_or_beside_another(DType dtype)
    {
        using var invariant = ComputeSettings.UseBatchInvariant();
        var dir = ModelDir(dtype);
        using var checkpoint = Checkpoint.Open(dir);
        var model = new MobileNetV5Encoder(new CheckpointWeights(checkpoint), MobileNetV5Config.Load(Path.Combine(dir, "config.json")));
        var pixels = TinyGemma3nVision.Pixels(dtype);                                    // [2, 3, 96, 96]
        var both = model.Forward(pixels);
        var alone = model.Forward(pixels.Narrow(0, 1, 1).Contiguous());
        Assert.True(alone.Select(0, 0).BitwiseEquals(both.Select(0, 1)), "image 1 differs alone and in the batch");
    }

    /// <summary>
    /// Every vision_config field the tower reads, changed in the engine only (the reference keeps the true one): each is
    /// caught. channel_multiplier and msfa_output_resolution also at timm's defaults (1.0, 16), what a loader that did not
    /// read model_args would use.
    /// </summary>
    [Theory]
    [InlineData("channel_multiplier", 0.0125)]   // the tiny tower's earlier value: stage widths 8, 8, 8, 16
    [InlineData("channel_multiplier", 1.0)]
    [InlineData("msfa_output_resolution", 1.0)]
    [InlineData("msfa_output_resolution", 16.0)]
    public void A_vision_field_changed_in_the_engine_only_is_caught(string field, double value)
    {
        var result = ScenarioRunner.Run(new Gemma3nVisionTowerScenario(DType.Float32)
        {
            VisionConfigMutation = c => field == "channel_multiplier" ? c with { ChannelMultiplier = value } : c with { MsfaOutputResolution = (int)value },
        }, CatalogContexts.Recorded).Result;
        output.WriteLine($"{field} = {value}: {result.Reason}");
        Assert.False(result.ComparisonPassed, $"{field} = {value}, yet the comparison passed: the engine does not read it, or a wrong value agrees");
    }
}
