using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma3n.Audio;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// The tiny Gemma3n whose audio tower the audio-tower scenarios compare: <see cref="TinyGemma3n"/>'s text decoder and
/// embedders with an audio_config whose every field is off HF's default (E4B's: hidden 1536, 128 mel bins, 12 layers of 8
/// heads, chunk 12, left 13, right 0, cap 50, conv kernel 5, reduction 4, residual weight 0.5, channels (128, 32), group norm
/// eps 1e-3, 3x3 kernels and 2x2 strides, eps 1e-6, clipping 1e10). HF's build moves every parameter off its init (norms
/// 1 + 0.2 N(0,1), per_dim_scale N(0, 0.5), weights std 1/sqrt(fan_in)), so activations are O(1) and the clipping bites.
/// Subsampling: 40 frames of 20 bins -> conv 0 (kernel 3x4, stride 2x2) 20 x 10 -> conv 1 (kernel 2x3, stride 1x2) 20 x 5;
/// 20 frames in blocks of 3, each query seeing 3 earlier and 2 later keys; reduced by 3 to 7 frames.
/// </summary>
public static class TinyGemma3nAudio
{
    public const string ModelName = "tiny-gemma3n-audio";
    public const int Clips = 2, Frames = 40, MelBins = 20, PaddedFrames = 12;

    public static JsonObject AudioConfig() => new()
    {
        ["hidden_size"] = 24, ["vocab_size"] = 8, ["vocab_offset"] = 264, ["rms_norm_eps"] = 5e-6, ["gradient_clipping"] = 2.5,
        ["input_feat_size"] = MelBins, ["conf_num_attention_heads"] = 3, ["conf_num_hidden_layers"] = 2,
        ["conf_attention_chunk_size"] = 3, ["conf_attention_context_left"] = 4, ["conf_attention_context_right"] = 2,
        ["conf_attention_logit_cap"] = 6.5, ["conf_conv_kernel_size"] = 3, ["conf_reduction_factor"] = 3, ["conf_residual_weight"] = 0.375,
        ["sscp_conv_channel_size"] = new JsonArray(6, 4), ["sscp_conv_group_norm_eps"] = 0.02,
        ["sscp_conv_kernel_size"] = new JsonArray(new JsonArray(3, 4), new JsonArray(2, 3)),
        ["sscp_conv_stride_size"] = new JsonArray(new JsonArray(2, 2), new JsonArray(1, 2)),
    };

    /// <summary><see cref="TinyGemma3n"/>'s config with <see cref="AudioConfig"/>.</summary>
    public static JsonObject Config()
    {
        var c = TinyGemma3n.Config();
        c["audio_config"] = AudioConfig();
        return c;
    }

    /// <summary>The model folder (built live by the reference's gemma3n_build, or the recorded one offline).</summary>
    public static string Directory(ScenarioContext context, DType dtype) => context.ModelDirectory(ModelName, dtype, (client, dir) =>
    {
        client.Invoke("gemma3n_build", new JsonObject
        {
            ["config"] = Config(), ["seed"] = TinyGemma3n.Seed, ["dtype"] = dtype.TorchName(), ["out_dir"] = client.WorkerPath(dir),
        });
        return dir;
    });

    /// <summary>Seeded mel features [2, 40, 20] and their mask (int64, 1 = valid): clip 1 has its last 12 frames padded.</summary>
    public static (Tensor Features, Tensor Mask) Inputs(DType dtype, int clips = Clips, ulong seed = 71)
    {
        var features = Tensor.Normal(dtype, seed, 0, 1, clips, Frames, MelBins);
        var mask = new long[clips * Frames];
        for (int c = 0; c < clips; c++)
            for (int t = 0; t < Frames; t++) mask[c * Frames + t] = c == 1 && t >= Frames - PaddedFrames ? 0 : 1;
        return (features, Tensor.FromArray(mask, clips, Frames));
    }
}

/// <summary>
/// Gemma3n's audio tower: the engine's <see cref="Gemma3nAudioEncoder"/> against HF's Gemma3nAudioEncoder
/// (Gemma3nForConditionalGeneration.model.audio_tower, called as get_audio_features calls it, with ~input_features_mask) on
/// <see cref="TinyGemma3nAudio"/>, module by module at HF's paths (<see cref="Gemma3nAudioEncoder.Modules"/>). The tower runs
/// whole on one rank (TP splits the decoder, not the towers, in the engine as in vLLM), so the layout is tp1. Faults:
/// <see cref="Faults.CumulativeNormPlainMean"/> is caught at the first subsampling conv block, <see cref="Faults.UsmRelShiftSkipped"/>
/// at the first conformer block's attention.
/// </summary>
public sealed record Gemma3nAudioTowerScenario : Scenario
{
    public const string InputName = "audio-tower";

    [SetsRequiredMembers]
    public Gemma3nAudioTowerScenario(DType dtype, string? fault = null, string? expectedFirstBadModule = null)
    {
        Id = BuildId("gemma3n", ["tp1", InputName], dtype, fault);
        Model = "gemma3n";
        Layout = "tp1";
        DType = dtype;
        Input = InputName;
        Fault = fault;
        ExpectedFirstBadModule = expectedFirstBadModule;
        Tolerance = Policy(dtype).Name;
        ReferenceKey = $"{TinyGemma3nAudio.ModelName}-{InputName}-{DTypeTag(dtype)}";
        Description = $"tiny Gemma3n audio tower (2 clips, one padded; every audio field off default), {dtype.TorchName()}, batch-invariant mode" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    /// <summary>
    /// The tower policies of Gemma4's audio tower scenarios (<see cref="Gemma4TowerScenario.Policy"/>): the same ops. Fixed
    /// policies, no float64 oracle: HF's float64 twin writes finfo(float64).min at masked logits, which its float32 softmax
    /// turns into -inf, so every fully masked (padded) query row is NaN there and the oracle would judge none of them.
    /// Measured: float32 worst max |diff| 3.5e-6 (rel L2 4.4e-7), bf16 worst rel L2 1.0e-2 (the reference's own 9.8e-3
    /// against the float64 twin on the unpadded rows).
    /// </summary>
    public static TolerancePolicy Policy(DType dtype) => Gemma4TowerScenario.Policy(dtype, Gemma4Tower.Audio);

    /// <summary>Changes the audio config the ENGINE is built with (the reference keeps the true one): config-field checks.</summary>
    public Func<Gemma3nAudioConfig, Gemma3nAudioConfig>? AudioConfigMutation { get; init; }

    public IReadOnlyList<string> Modules => Gemma3nAudioEncoder.Modules((int)TinyGemma3nAudio.AudioConfig()["conf_num_hidden_layers"]!);

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context)
    {
        var (f, m) = TinyGemma3nAudio.Inputs(DType);
        return new Dictionary<string, Tensor> { ["input_features"] = f, ["input_features_mask"] = m };
    }

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["model_seed"] = TinyGemma3n.Seed.ToString(CultureInfo.InvariantCulture),
        ["config"] = TinyGemma3nAudio.Config().ToJsonString(),
        ["inputs"] = $"features N(0,1) seed 71, clip 1 frames {TinyGemma3nAudio.Frames - TinyGemma3nAudio.PaddedFrames}..{TinyGemma3nAudio.Frames - 1} masked",
    };

    public override ReferenceBundle ComputeReference(ScenarioContext context)
    {
        var dir = TinyGemma3nAudio.Directory(context, DType);
        return TowerRun.Reference(context, "gemma3n_audio_tower", dir, DType, Modules, Inputs(context).Select(kv => (kv.Key, kv.Value)).ToArray(), reported: "oracle_unavailable");
    }

    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var dir = context.EngineDirectory(TinyGemma3nAudio.Directory(context, DType));
        var inputs = Inputs(context);
        var (layers, error, failedModule) = TowerRun.Judge(context, reference, dir, Modules, Policy(DType), (checkpoint, sink) =>
        {
            var config = Gemma3nAudioConfig.Load(Path.Combine(dir, "config.json"));
            var options = Engine.Models.FaultMap.Plan(Fault, "gemma3n").Gemma3n;
            var model = new Gemma3nAudioEncoder(new CheckpointWeights(checkpoint, DType), AudioConfigMutation?.Invoke(config) ?? config, sink, options);
            model.Forward(inputs["input_features"], Gemma3nScenario.Flags(inputs["input_features_mask"]));
        });
        return new ScenarioResult(this, layers, null, error, failedModule, sw.Elapsed);
    }

    /// <summary>The catalog's Gemma3n audio-tower scenarios: fp32 and bf16, and each planted bug caught at its module in both.</summary>
    public static IEnumerable<Scenario> All()
    {
        const string p = Gemma3nAudioEncoder.DefaultPrefix;
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
        {
            yield return new Gemma3nAudioTowerScenario(dtype);
            yield return new Gemma3nAudioTowerScenario(dtype, Faults.CumulativeNormPlainMean, $"{p}.subsample_conv_projection.conv_0");
            yield return new Gemma3nAudioTowerScenario(dtype, Faults.UsmRelShiftSkipped, $"{p}.conformer.0.attention.attn");
        }
    }
}
