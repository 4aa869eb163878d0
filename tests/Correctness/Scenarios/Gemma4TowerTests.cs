using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Gemma4's audio tower, where the 4D x 3D torch.matmul that broke vLLM's batch-invariant matmul on Gemma-4-E2B lives
/// (Gemma4AudioAttention's relative-position logits, [B, N, U*W, H] @ [N, H, F]). Offline on the recorded tiny E2B-like
/// model, except the last test.
/// </summary>
[Collection(SerialCollection.Name)]
public class Gemma4TowerTests(ITestOutputHelper output)
{
    private static string ModelDir(DType dtype) =>
        Path.Combine(Fixtures.DefaultDirectory(), "models", $"{TinyGemma4Towers.ModelName}-{(dtype == DType.Float32 ? "fp32" : "bf16")}");

    private static Tensor[] Encode(DType dtype, Tensor features, MatmulOptions? matmul = null)
    {
        var dir = ModelDir(dtype);
        using var checkpoint = Checkpoint.Open(dir);
        var model = new Gemma4AudioModel(new CheckpointWeights(checkpoint), Gemma4AudioConfig.Load(Path.Combine(dir, "config.json")), matmul: matmul);
        var tokens = model.Forward(features).SoftTokens;                       // [B, 8, 40]
        return Enumerable.Range(0, tokens.Size(0)).Select(i => tokens.Select(0, i).Clone()).ToArray();
    }

    /// <summary>Clip 0 of a batch of <paramref name="clips"/> sits at <paramref name="at"/>; the others are different clips.</summary>
    private static Tensor Batch(DType dtype, int clips, int at)
    {
        var parts = Enumerable.Range(0, clips)
            .Select(i => TinyGemma4Towers.AudioInputs(dtype, 1, i == at ? 61UL : 100UL + (ulong)i).Features).ToList();
        return Tensor.Cat(parts, 0);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void With_batch_invariant_mode_a_clip_encodes_to_the_same_bits_alone_or_in_a_batch_of_3_or_8_at_1_or_2_threads(DType dtype)
    {
        using var invariant = ComputeSettings.UseBatchInvariant();
        Tensor alone;
        using (ComputeSettings.UseThreads(1)) alone = Encode(dtype, Batch(dtype, 1, 0))[0];
        foreach (int threads in new[] { 1, 2 })
        {
            using var t = ComputeSettings.UseThreads(threads);
            foreach (var (clips, at) in new[] { (1, 0), (3, 1), (8, 5) })
            {
                var got = Encode(dtype, Batch(dtype, clips, at))[at];
                Assert.True(alone.BitwiseEquals(got), $"clip at {at} of {clips}, {threads} threads: soft tokens differ from the clip encoded alone");
            }
        }
    }

    [Fact]
    public void The_pre_fix_batch_invariant_matmul_dies_in_the_audio_attention_naming_both_shapes()
    {
        using var invariant = ComputeSettings.UseBatchInvariant();
        var features = TinyGemma4Towers.AudioInputs(DType.BFloat16).Features;      // [2, 32, 16]: 8 frames after subsampling, 2 blocks of 4
        var e = Assert.Throws<ModuleFailedException>(() => Encode(DType.BFloat16, features, MatmulOptions.PreFixBatchInvariant));
        output.WriteLine(e.Message);
        Assert.Equal("model.audio_tower.layers.0.self_attn", e.Module);
        // queries [B=2, N=2, U*W=8, H=16] @ relative keys [N=2, H=16, F=6]
        Assert.Contains("got shapes [2, 2, 8, 16] and [2, 16, 6]", e.Message);

        // the same model on the fixed matmul (the default) runs
        Assert.Equal([8, 40], Encode(DType.BFloat16, features)[0].ShapeArray);
    }

    [Fact]
    public void The_valid_soft_tokens_are_the_unpadded_frames_clip_after_clip()
    {
        var dir = ModelDir(DType.Float32);
        using var checkpoint = Checkpoint.Open(dir);
        var model = new Gemma4AudioModel(new CheckpointWeights(checkpoint), Gemma4AudioConfig.Load(Path.Combine(dir, "config.json")));
        var (features, mask) = TinyGemma4Towers.AudioInputs(DType.Float32);            // clip 1: its last 8 of 32 frames padded
        var output = model.Forward(features, Tensor.FromArray(TinyGemma4Towers.MaskValues(mask), mask.ShapeArray));
        Assert.Equal([2, 8], output.Mask.ShapeArray);
        var valid = output.ValidSoftTokens();
        Assert.Equal([8 + 6, 40], valid.ShapeArray);                                      // 32 -> 8 frames; 24 valid -> 6
        Assert.True(valid.Select(0, 8 + 5).BitwiseEquals(output.SoftTokens.Select(0, 1).Select(0, 5)));
    }

    /// <summary>Gemma-4-E2B's audio_config (HF's Gemma4AudioConfig defaults).</summary>
    private static Gemma4AudioConfig E2BAudio => new()
    {
        HiddenSize = 1024, NumHiddenLayers = 12, NumAttentionHeads = 8, HiddenAct = "silu", SubsamplingConvChannels = [128, 32],
        ConvKernelSize = 5, ResidualWeight = 0.5, AttentionChunkSize = 12, AttentionContextLeft = 13, AttentionContextRight = 0,
        AttentionLogitCap = 50.0, AttentionInvalidLogitsValue = -1e9, UseClippedLinears = true, RmsNormEps = 1e-6,
        GradientClipping = 1e10, OutputProjDims = 1536,
    };

    [Fact]
    public void As_reported_on_Gemma_4_E2B_a_one_second_clip_dies_on_the_relative_position_product_1x8x36x128_by_8x128x13()
    {
        // One second of audio: 100 mel frames, 25 after the two stride-2 convs; 3 blocks of 12 queries; 13 relative positions.
        var c = E2BAudio;
        const string p = "model.audio_tower.layers.0.self_attn";
        var w = new Dictionary<string, Tensor>();
        ulong seed = 70;
        foreach (var proj in new[] { "q_proj", "k_proj", "v_proj", "post" })
        {
            w[$"{p}.{proj}.linear.weight"] = Tensor.Normal(DType.BFloat16, seed++, 0, 1f / 32, 1024, 1024);
            w[$"{p}.{proj}.input_min"] = Tensor.Scalar(double.NegativeInfinity, DType.BFloat16);
            w[$"{p}.{proj}.input_max"] = Tensor.Scalar(double.PositiveInfinity, DType.BFloat16);
            w[$"{p}.{proj}.output_min"] = Tensor.Scalar(double.NegativeInfinity, DType.BFloat16);
            w[$"{p}.{proj}.output_max"] = Tensor.Scalar(double.PositiveInfinity, DType.BFloat16);
        }
        w[$"{p}.relative_k_proj.weight"] = Tensor.Normal(DType.BFloat16, seed++, 0, 1f / 32, 1024, 1024);
        w[$"{p}.per_dim_scale"] = Tensor.Normal(DType.BFloat16, seed, 0, 0.5f, 128);
        var x = Tensor.Normal(DType.BFloat16, 71, 0, 1, 1, 25, 1024);
        var pos = Gemma4AudioModel.RelativePositionEmbeddings(c, DType.BFloat16);                 // [13, 1024]
        var mask = Gemma4AudioModel.BlockedMask(Enumerable.Repeat(true, 25).ToArray(), 1, 25, c);

        using var invariant = ComputeSettings.UseBatchInvariant();
        var preFix = new Gemma4AudioAttention(new DictionaryWeights(w), p, c, MatmulOptions.PreFixBatchInvariant);
        var e = Assert.Throws<ArgumentException>(() => preFix.Forward(x, pos, mask));
        output.WriteLine(e.Message);
        Assert.Contains("got shapes [1, 8, 36, 128] and [8, 128, 13]", e.Message);

        var fixedAttention = new Gemma4AudioAttention(new DictionaryWeights(w), p, c, MatmulOptions.Default);
        Assert.Equal([1, 25, 1024], fixedAttention.Forward(x, pos, mask).ShapeArray);
    }

    [Fact]
    public void The_fault_reaches_the_model_only_as_a_constructor_argument()
    {
        // no ambient switch exists (Faults.Check only checks names): the default options run the fixed matmul
        Assert.Equal([8, 40], Encode(DType.Float32, TinyGemma4Towers.AudioInputs(DType.Float32).Features)[0].ShapeArray);
    }

    [Theory]
    [InlineData("audio-tower/fp32")]
    [InlineData("audio-tower/bf16")]
    public void The_recording_reports_that_HF_eager_and_sdpa_disagree_on_the_audio_tower_and_agree_on_text(string which)
    {
        var bundle = ReferenceBundle.Load(Fixtures.BundlePath(Fixtures.DefaultDirectory(), $"{TinyGemma4Towers.ModelName}-{which.Replace('/', '-')}"));
        var consistency = bundle.Versions["reference_consistency"];
        output.WriteLine(consistency);
        Assert.Equal("sdpa", bundle.Versions["reference_attn_implementation"]);
        Assert.Contains("audio_tower: eager and sdpa DISAGREE", consistency);
        Assert.Contains("first divergent module model.audio_tower.layers.0.self_attn", consistency);
        Assert.Contains("text_only: eager and sdpa agree", consistency);
    }

    [Fact]
    public void A_missing_audio_config_field_names_the_file_and_the_path()
    {
        var path = Path.Combine(Path.GetTempPath(), $"g4-audio-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, """{"model_type": "gemma4", "audio_config": {"hidden_size": 32}}""");
        try
        {
            var e = Assert.Throws<ConfigException>(() => Gemma4AudioConfig.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("audio_config.num_hidden_layers", e.Message);
        }
        finally { File.Delete(path); }
    }

    [SkippableFact]
    [Trait(LiveReference.Tier, LiveReference.Live)]
    public void Live_the_reference_is_sdpa_and_its_eager_disagreement_is_reported()
    {
        var context = CatalogContexts.Live();
        var scenario = ScenarioCatalog.Find("gemma4/e2b-like/tp1/audio-tower/fp32")!;
        var result = ScenarioRunner.Run(scenario, context).Result;                  // the catalog's live run computes this bundle once
        output.WriteLine(result.Describe());
        Assert.True(result.Passed, result.Reason);
        Assert.Contains(result.Notes, n => n == "reference: HF under attn_implementation=sdpa");
        Assert.Contains(result.Notes, n => n.Contains("audio_tower: eager and sdpa DISAGREE") && n.Contains("text_only: eager and sdpa agree"));
    }
}

/// <summary>
/// Every config field the towers read matters: the engine built with one field changed (the reference keeps the true
/// config) must fail the fp32 comparison. A field the engine ignored, or one left at a value where a wrong default would
/// agree, would let its mutation pass.
/// </summary>
[Collection(SerialCollection.Name)]
public class Gemma4TowerConfigMutationTests(ITestOutputHelper output)
{
    public static TheoryData<string> AudioFields() => Fields<Gemma4AudioConfig>();
    public static TheoryData<string> VisionFields() => Fields<Harness.Engine.Models.Gemma4.Vision.Gemma4VisionConfig>();

    /// <summary>
    /// Fields no value can show: attention_invalid_logits_value fills masked logits after the softcap has bounded every real
    /// logit to (-cap, cap), so any value below -cap gives the same softmax (a fully masked row is uniform either way).
    /// </summary>
    private static readonly string[] Invisible = [nameof(Gemma4AudioConfig.AttentionInvalidLogitsValue)];

    private static TheoryData<string> Fields<T>()
    {
        var data = new TheoryData<string>();
        foreach (var p in typeof(T).GetProperties().Where(p => p.CanWrite && !Invisible.Contains(p.Name))) data.Add(p.Name);
        return data;
    }

    /// <summary>
    /// A copy of a config record with one property changed: ints +2 (a chunk of 5 instead of 4 keeps context_size // 2, and
    /// blocked local attention with relative positions is the same for any chunking with the same relative table), doubles
    /// x10, bools flipped, lists +1 each, activation names swapped.
    /// </summary>
    private static T Mutate<T>(T config, string field)
    {
        var copy = (T)typeof(T).GetMethod("<Clone>$")!.Invoke(config, null)!;
        var p = typeof(T).GetProperty(field)!;
        object v = p.GetValue(config)!;
        object next = v switch
        {
            int i => i + 2,
            double d => d * 10,
            bool b => !b,
            int[] a => a.Select(x => x + 1).ToArray(),
            string s => s == "silu" ? "gelu_pytorch_tanh" : "silu",
            _ => throw new InvalidOperationException($"no mutation for {field} of type {v.GetType().Name}"),
        };
        p.SetValue(copy, next);
        return copy;
    }

    private void AssertCaught(Scenario scenario, string field)
    {
        var result = ScenarioRunner.Run(scenario, CatalogContexts.Recorded).Result;
        output.WriteLine($"{field}: {result.Reason}");
        Assert.False(result.ComparisonPassed, $"{field} changed, yet the comparison passed: the engine does not read it, or a wrong value agrees");
    }

    [Theory]
    [MemberData(nameof(AudioFields))]
    public void Audio_field_changed_in_the_engine_only_is_caught(string field) =>
        AssertCaught(new Gemma4TowerScenario(Gemma4Tower.Audio, DType.Float32) { AudioConfigMutation = c => Mutate(c, field) }, field);

    [Theory]
    [MemberData(nameof(VisionFields))]
    public void Vision_field_changed_in_the_engine_only_is_caught(string field) =>
        AssertCaught(new Gemma4TowerScenario(Gemma4Tower.Vision, DType.Float32) { VisionConfigMutation = c => Mutate(c, field) }, field);
}
