using Harness.Engine.Models.Gemma4;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// transformers changed Gemma4's mask for image tokens between releases: 5.12.1 lets an image's tokens see each other
/// both ways on every layer (Gemma 3's rule); later releases (5.17 on the GPU machine) only on sliding layers, and
/// there only inside the window (Gemma 4's rule). Against 5.17, an engine that kept 5.12.1's rule diverged at
/// `model.language_model.layers.0.self_attn` (relative L2 2.6e-3) on `gemma4/moe/{tp1,tp2}/image/fp32`. The worker
/// now reads the rule off the masks HF hands its layers and the recording carries it; the engine is told it.
/// </summary>
public class Gemma4VisionMaskTests
{
    private static readonly Gemma4MultimodalScenario Image = (Gemma4MultimodalScenario)ScenarioCatalog.Find("gemma4/moe/tp1/image/fp32")!;

    private static ReferenceBundle Recorded() =>
        ReferenceBundle.Load(Fixtures.BundlePath(CatalogContexts.Recorded.FixturesDirectory, Image.ReferenceKey));

    private static ReferenceBundle WithRule(ReferenceBundle b, string? rule)
    {
        var v = new Dictionary<string, string>(b.Versions);
        if (rule is null) v.Remove(Gemma4MultimodalScenario.VisionMaskKey);
        else v[Gemma4MultimodalScenario.VisionMaskKey] = rule;
        return b with { Versions = v };
    }

    [Fact]
    public void The_recording_says_which_rule_its_reference_used()
    {
        var recorded = Recorded();
        Assert.Equal("5.12.1", recorded.Versions["transformers"]);
        Assert.Equal("gemma3-all-layers", recorded.Versions[Gemma4MultimodalScenario.VisionMaskKey]);
    }

    [Fact]
    public void Told_the_other_rule_the_engine_diverges_at_the_first_sliding_layers_attention()
    {
        // layer 0 is a sliding layer of window 3 and the image block is 4 tokens: the rules differ there already
        var result = Image.RunEngine(CatalogContexts.Recorded, WithRule(Recorded(), "gemma4-sliding-layers-only"));
        Assert.False(result.Passed, "an engine on Gemma 4's rule must not pass against a reference that used Gemma 3's");
        Assert.Equal("model.language_model.layers.0.self_attn", result.FirstBadModule);
        Assert.True(Image.RunEngine(CatalogContexts.Recorded, Recorded()).Passed);
    }

    [Fact]
    public void A_recording_without_the_rule_is_an_input_error_not_a_guess()
    {
        var e = Assert.Throws<KeyNotFoundException>(() => Image.VisionMaskOf(WithRule(Recorded(), null), Gemma4TextConfig.From(
            Harness.Engine.Config.HfConfig.Load(Path.Combine(CatalogContexts.Recorded.FixturesDirectory, "models", "tiny-gemma4-moe-mm-fp32", "config.json")))));
        Assert.Contains("gemma4_vision_mask", e.Message);
        var bad = Assert.Throws<ArgumentException>(() => Image.VisionMaskOf(WithRule(Recorded(), "gemma5"), Gemma4TextConfig.From(
            Harness.Engine.Config.HfConfig.Load(Path.Combine(CatalogContexts.Recorded.FixturesDirectory, "models", "tiny-gemma4-moe-mm-fp32", "config.json")))));
        Assert.Contains("known: gemma4-sliding-layers-only, gemma3-all-layers", bad.Message);
    }
}
