using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.Models.Gemma4.Vision;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// The tiny E2B-like Gemma4ForConditionalGeneration whose audio and vision towers the tower scenarios compare (the text
/// decoder is kept small: the towers are what these scenarios run). Every tower config field the engine reads is off
/// HF's default (and off its derived value), and ext/gemma4_towers.py moves every tower parameter and buffer off its init:
/// norms 1 + 0.2 N(0,1), per_dim_scale and the position tables N(0, 0.5), finite asymmetric clip bounds, weights with std
/// 1/sqrt(fan_in) so activations are O(1) and the clips, the softcap and the gradient clipping bite.
/// Audio: 2 conformer layers, hidden 32, 2 heads, chunk 4, left 5 (the token + 3 earlier), right 2 (one later), mel bins 16
/// (ceil(ceil(16/2)/2) = 16/4). Vision: 2 layers, hidden 32, 2 heads with 1 kv head, head_dim 16, patch 4, pooling 2x2.
/// </summary>
public static class TinyGemma4Towers
{
    public const ulong Seed = 4242;
    public const string ModelName = "gemma4-towers-e2b-like";
    public const int Clips = 2, Frames = 32, MelBins = 16, Images = 2, Patches = 36, PatchValues = 48;

    public static JsonObject Config() => new()
    {
        ["model_type"] = "gemma4",
        ["text_config"] = new JsonObject
        {
            ["vocab_size"] = 128, ["hidden_size"] = 32, ["intermediate_size"] = 48, ["num_hidden_layers"] = 2,
            ["num_attention_heads"] = 2, ["num_key_value_heads"] = 1, ["head_dim"] = 16, ["global_head_dim"] = 32,
            ["layer_types"] = new JsonArray("sliding_attention", "full_attention"), ["sliding_window"] = 4,
            ["max_position_embeddings"] = 512, ["vocab_size_per_layer_input"] = 128, ["hidden_size_per_layer_input"] = 8,
            ["num_kv_shared_layers"] = 0, ["final_logit_softcapping"] = 30.0, ["pad_token_id"] = 0, ["bos_token_id"] = 2,
            ["eos_token_id"] = 1,
        },
        ["vision_config"] = new JsonObject
        {
            ["hidden_size"] = 32, ["intermediate_size"] = 48, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 2,
            ["num_key_value_heads"] = 1, ["head_dim"] = 16, ["patch_size"] = 4, ["position_embedding_size"] = 24,
            ["pooling_kernel_size"] = 2, ["rms_norm_eps"] = 1e-5, ["use_clipped_linears"] = true, ["standardize"] = true,
            ["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 37.0 },
            ["hidden_activation"] = "silu",
        },
        ["audio_config"] = new JsonObject
        {
            ["hidden_size"] = 32, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 2,
            ["subsampling_conv_channels"] = new JsonArray(16, 6), ["output_proj_dims"] = 40, ["attention_chunk_size"] = 4,
            ["attention_context_left"] = 5, ["attention_context_right"] = 2, ["conv_kernel_size"] = 3, ["residual_weight"] = 0.4,
            ["attention_logit_cap"] = 7.0, ["attention_invalid_logits_value"] = -1e8, ["rms_norm_eps"] = 1e-5,
            ["gradient_clipping"] = 4.0, ["hidden_act"] = "gelu_pytorch_tanh", ["use_clipped_linears"] = true,
        },
        ["image_token_id"] = 120, ["audio_token_id"] = 121, ["video_token_id"] = 122, ["boi_token_id"] = 123,
        ["eoi_token_id"] = 124, ["boa_token_id"] = 125, ["eoa_token_index"] = 126,
    };

    /// <summary>The model folder (built live with ext/gemma4_towers.py, or the recorded one offline).</summary>
    public static string Directory(ScenarioContext context, DType dtype) => context.ModelDirectory(ModelName, dtype, (client, dir) =>
    {
        client.Invoke("gemma4_towers_build", new JsonObject
        {
            ["config"] = Config(), ["seed"] = Seed, ["dtype"] = dtype.TorchName(), ["out_dir"] = client.WorkerPath(dir),
        });
        return dir;
    });

    /// <summary>Seeded mel features [clips, 32, 16] and their mask (int64 0/1): clip 1 has its last 8 frames padded.</summary>
    public static (Tensor Features, Tensor Mask) AudioInputs(DType dtype, int clips = Clips, ulong seed = 61)
    {
        var features = Tensor.Normal(dtype, seed, 0, 1, clips, Frames, MelBins);
        var mask = new long[clips * Frames];
        for (int c = 0; c < clips; c++)
            for (int t = 0; t < Frames; t++) mask[c * Frames + t] = c == 1 && t >= Frames - 8 ? 0 : 1;
        return (features, Tensor.FromArray(mask, clips, Frames));
    }

    /// <summary>
    /// Seeded patchified pixels [2, 36, 48] in [0, 1) and their (x, y) positions [2, 36, 2]: image 0 is a 6x6 patch grid,
    /// image 1 a 4x4 grid followed by 20 padding patches at (-1, -1).
    /// </summary>
    public static (Tensor Pixels, Tensor Positions) VisionInputs(DType dtype)
    {
        var pixels = Tensor.Uniform(dtype, 62, 0, 1, Images, Patches, PatchValues);
        var pos = new long[Images * Patches * 2];
        for (int i = 0; i < Patches; i++)
        {
            pos[2 * i] = i % 6; pos[2 * i + 1] = i / 6;
            bool pad = i >= 16;
            pos[(Patches + i) * 2] = pad ? -1 : i % 4; pos[(Patches + i) * 2 + 1] = pad ? -1 : i / 4;
        }
        return (pixels, Tensor.FromArray(pos, Images, Patches, 2));
    }

    public static bool[] MaskValues(Tensor mask) => mask.ToInt64Array().Select(v => v != 0).ToArray();

    public static IReadOnlyList<string> AudioModules(int layers = 2)
    {
        const string p = Gemma4AudioModel.DefaultPrefix;
        var list = new List<string> { $"{p}.subsample_conv_projection" };
        for (int i = 0; i < layers; i++)
            list.AddRange([$"{p}.layers.{i}.feed_forward1", $"{p}.layers.{i}.self_attn", $"{p}.layers.{i}.lconv1d", $"{p}.layers.{i}.feed_forward2", $"{p}.layers.{i}"]);
        list.Add($"{p}.output_proj");
        return list;
    }

    public static IReadOnlyList<string> VisionModules(int layers = 2)
    {
        const string p = Gemma4VisionModel.DefaultPrefix;
        var list = new List<string> { $"{p}.patch_embedder" };
        for (int i = 0; i < layers; i++)
            list.AddRange([$"{p}.encoder.layers.{i}.self_attn", $"{p}.encoder.layers.{i}.mlp", $"{p}.encoder.layers.{i}"]);
        list.AddRange([$"{p}.pooler", p]);
        return list;
    }
}

/// <summary>Which tower a <see cref="Gemma4TowerScenario"/> runs.</summary>
public enum Gemma4Tower { Audio, Vision }

/// <summary>
/// Gemma4's audio or vision tower, the engine's <see cref="Gemma4AudioModel"/> / <see cref="Gemma4VisionModel"/> against HF's
/// Gemma4ForConditionalGeneration.model.audio_tower / vision_tower on the same tiny checkpoint, layer by layer (HF module
/// paths), in batch-invariant mode. The reference runs under attn_implementation="sdpa": HF 5.12.1's audio tower is wrong
/// under eager (transformers issue 48818), and sdpa's boolean mask is the semantics the engine documents. Each recording also
/// runs both towers and a text-only prompt under eager and sdpa and records where they disagree (the report's note).
/// With the fault matmul-no-nd-broadcast the audio tower is built on vLLM's pre-fix batch-invariant matmul and must die in
/// model.audio_tower.layers.0.self_attn on the [B, N, U*W, H] @ [N, H, F] product, naming both shapes.
/// </summary>
public sealed record Gemma4TowerScenario : Scenario
{
    public const string ReferenceAttention = "sdpa";

    public Gemma4Tower Tower { get; }

    [SetsRequiredMembers]
    public Gemma4TowerScenario(Gemma4Tower tower, DType dtype, string? fault = null, string? expectedFirstBadModule = null)
    {
        Tower = tower;
        string input = tower == Gemma4Tower.Audio ? "audio-tower" : "vision-tower";
        Id = BuildId("gemma4", ["e2b-like", "tp1", input], dtype, fault);
        Model = "gemma4";
        Layout = "tp1";
        DType = dtype;
        Input = input;
        Fault = fault;
        ExpectedFirstBadModule = expectedFirstBadModule;
        Tolerance = Policy(dtype, tower).Name;
        ReferenceKey = $"{TinyGemma4Towers.ModelName}-{input}-{DTypeTag(dtype)}";
        Description = $"tiny E2B-like Gemma4 {(tower == Gemma4Tower.Audio ? "audio tower (2 clips, one padded)" : "vision tower (6x6 and padded 4x4 patch grids)")}, " +
                      $"{dtype.TorchName()}, batch-invariant mode, reference HF under attn_implementation={ReferenceAttention}" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    /// <summary>
    /// float32, audio: the GEMM policy (rtol 1e-5, atol 1e-5; measured worst 4.3e-6, and HF's default-eps norms read with
    /// rms_norm_eps instead, a real porting slip, showed 3.5e-5 at the first feed-forward). float32, vision ("float32-vision",
    /// elementwise): the pooler scales by sqrt(hidden) and the residual stream reaches |x| ~ 8-30, so float32 reordering noise
    /// (~1e-6 of that scale) leaves up to 2.1e-5 on single elements near zero (measured); atol 5e-5 allows 2.4x.
    /// bfloat16 ("bfloat16-tower"): judged norm-wise like the bf16 TP scenarios: every op rounds to bf16, and where the
    /// engine's float32 sum and torch's straddle a rounding boundary they take neighbouring values, a one-ulp (2^-8 relative)
    /// flip that norms, softcap and softmax carry on; single elements near zero have no useful bound. Measured relative L2:
    /// audio 8.2e-3, vision 8.5e-3 at worst (3e-2 allows 3.5x).
    /// </summary>
    public static TolerancePolicy Policy(DType dtype, Gemma4Tower tower = Gemma4Tower.Audio) => dtype == DType.Float32
        ? tower == Gemma4Tower.Audio ? Tolerances.Float32Gemm
            : new TolerancePolicy("float32-vision", 1e-5, 5e-5,
                "float32 vision tower: reordering noise ~1e-6 of activations that reach |x| ~ 30 after the sqrt(hidden) pooling scale")
        : new TolerancePolicy("bfloat16-tower", 1.6e-2, 3.9e-3,
            "a bf16 tower: one-ulp flips where two float32 sums straddle a bf16 rounding boundary, carried through norms, softcap and softmax")
        { MaxRelativeL2 = 3e-2 };

    /// <summary>Changes the config the ENGINE is built with (the reference keeps the true one): for config-field mutation checks.</summary>
    public Func<Gemma4AudioConfig, Gemma4AudioConfig>? AudioConfigMutation { get; init; }

    /// <summary>Changes the vision config the ENGINE is built with (the reference keeps the true one).</summary>
    public Func<Gemma4VisionConfig, Gemma4VisionConfig>? VisionConfigMutation { get; init; }

    public IReadOnlyList<string> Modules => Tower == Gemma4Tower.Audio ? TinyGemma4Towers.AudioModules() : TinyGemma4Towers.VisionModules();

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context)
    {
        if (Tower == Gemma4Tower.Audio)
        {
            var (f, m) = TinyGemma4Towers.AudioInputs(DType);
            return new Dictionary<string, Tensor> { ["input_features"] = f, ["input_features_mask"] = m };
        }
        var (p, pos) = TinyGemma4Towers.VisionInputs(DType);
        return new Dictionary<string, Tensor> { ["pixel_values"] = p, ["pixel_position_ids"] = pos };
    }

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["model_seed"] = TinyGemma4Towers.Seed.ToString(CultureInfo.InvariantCulture),
        ["config"] = TinyGemma4Towers.Config().ToJsonString(),
        ["reference_attn_implementation"] = ReferenceAttention,
        ["inputs"] = Tower == Gemma4Tower.Audio ? "features N(0,1) seed 61, clip 1 frames 24..31 masked" : "pixels U(0,1) seed 62, grids 6x6 and 4x4 + 20 padding",
    };

    public override ReferenceBundle ComputeReference(ScenarioContext context)
    {
        var dir = TinyGemma4Towers.Directory(context, DType);
        var inputs = Inputs(context).Select(kv => (kv.Key, kv.Value)).ToArray();
        var reference = TowerRun.Reference(context, Tower == Gemma4Tower.Audio ? "gemma4_audio_tower" : "gemma4_vision_tower", dir, DType, Modules,
            inputs, new JsonObject { ["attn_implementation"] = ReferenceAttention }, null, "oracle_unavailable");
        // the consistency check runs after the capture, as before
        var versions = new Dictionary<string, string>(reference.Versions)
        {
            ["reference_attn_implementation"] = ReferenceAttention,
            ["reference_consistency"] = Consistency(context.Client!, dir, inputs),
        };
        return reference with { Versions = versions };
    }

    /// <summary>
    /// Where eager and sdpa count as disagreeing (relative L2 of a module's output): float32 1e-4 (their reordering noise is
    /// ~1e-6; the audio tower's mask inversion is O(1)); bfloat16 3e-2, the bf16 tower policy (eager rounds scores and
    /// probabilities to bf16, sdpa keeps them in float32).
    /// </summary>
    public static double ConsistencyBound(DType dtype) => dtype == DType.Float32 ? 1e-4 : 3e-2;

    /// <summary>
    /// This tower and a text-only prompt under eager and sdpa (gemma4_towers_consistency); one line per part:
    /// "audio_tower: eager and sdpa DISAGREE (max |diff| 3.2), first divergent module model.audio_tower.layers.0.self_attn".
    /// </summary>
    private string Consistency(ReferenceClient client, string dir, (string, Tensor)[] inputs)
    {
        string towerCapture = Tower == Gemma4Tower.Audio ? "audio_capture" : "vision_capture";
        var args = new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir), ["dtype"] = DType.TorchName(), ["oracle"] = false,
            ["max_rel_l2"] = ConsistencyBound(DType),
            [towerCapture] = new JsonArray(Modules.Select(m => (JsonNode)m!).ToArray()),
        };
        var ids = Tensor.FromArray(new long[] { 2, 5, 9, 17, 33, 4 }, 1, 6);
        var reply = client.Invoke("gemma4_towers_consistency", args, [.. inputs, ("input_ids", ids)]);
        var report = reply.Result["consistency"]!.AsObject();
        return string.Join("; ", report.Select(kv =>
        {
            var part = kv.Value!.AsObject();
            double max = (double)part["max_abs"]!;
            return part["first_divergent"] is JsonObject first
                ? $"{kv.Key}: eager and sdpa DISAGREE (relative L2 {(double)first["rel_l2"]!:G3} > {ConsistencyBound(DType):G3}, max |diff| {max:G3}), first divergent module {(string)first["module"]!}"
                : $"{kv.Key}: eager and sdpa agree (max |diff| {max:G3})";
        }));
    }

    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var dir = context.EngineDirectory(TinyGemma4Towers.Directory(context, DType));
        var inputs = Inputs(context);
        // The captured modules only: the bundle also holds the op's own outputs (the same tensors under other names) and the
        // float64 oracle captures ("oracle.*"), which the comparison layer consumes separately.
        var (layers, error, failedModule) = TowerRun.Judge(context, reference, dir, Modules, Policy(DType, Tower), (checkpoint, sink) =>
        {
            IWeightSource weights = new CheckpointWeights(checkpoint, DType);
            IActivationSink towerSink = sink;
            using var gpu = CudaScenarios.OnGpu(Device, ref weights, ref towerSink);           // --device cuda: the tower on the GPU
            var configPath = Path.Combine(dir, "config.json");
            if (Tower == Gemma4Tower.Audio)
            {
                var config = Gemma4AudioConfig.Load(configPath);
                var model = new Gemma4AudioModel(weights, AudioConfigMutation?.Invoke(config) ?? config, towerSink, Engine.Models.FaultMap.Plan(Fault, "gemma4").Matmul);
                var mask = Tensor.FromArray(TinyGemma4Towers.MaskValues(inputs["input_features_mask"]), inputs["input_features_mask"].ShapeArray);
                model.Forward(CudaScenarios.Input(Device, inputs["input_features"])!, mask);
            }
            else
            {
                var config = Gemma4VisionConfig.Load(configPath);
                var model = new Gemma4VisionModel(weights, VisionConfigMutation?.Invoke(config) ?? config, towerSink, Engine.Models.FaultMap.Plan(Fault, "gemma4").Matmul);
                model.Forward(CudaScenarios.Input(Device, inputs["pixel_values"])!, inputs["pixel_position_ids"]);   // positions: a host input
            }
        });
        var notes = new List<string> { $"reference: HF under attn_implementation={ReferenceAttention}" };
        if (reference.Versions.TryGetValue("reference_consistency", out var consistency)) notes.Add($"reference consistency: {consistency}");
        return new ScenarioResult(this, layers, null, error, failedModule, sw.Elapsed) { Notes = notes };
    }

    /// <summary>The catalog's tower scenarios.</summary>
    public static IEnumerable<Scenario> All()
    {
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
        {
            yield return new Gemma4TowerScenario(Gemma4Tower.Audio, dtype);
            yield return new Gemma4TowerScenario(Gemma4Tower.Vision, dtype);
        }
        // The bug as reported: vLLM's batch-invariant matmul without its ND x ND path dies on the audio attention's 4D x 3D product.
        yield return new Gemma4TowerScenario(Gemma4Tower.Audio, DType.BFloat16, Faults.MatmulNoNdBroadcast,
            $"{Gemma4AudioModel.DefaultPrefix}.layers.0.self_attn");
    }
}

/// <summary>
/// One tower forward on a tiny checkpoint, judged module by module (the Gemma4 towers' and Gemma3n's audio tower's
/// scenarios): the capture, the batch-invariant GEMM, the checkpoint opened for the forward, an engine failure settled onto
/// its module, and the modules (with their float64 oracle captures) compared under one policy.
/// </summary>
internal static class TowerRun
{
    /// <summary>
    /// The worker's tower op on the tiny checkpoint, capturing <paramref name="modules"/>: the reference's tensors, with the
    /// context's versions plus <paramref name="versions"/> and whichever of <paramref name="reported"/> the worker's reply
    /// names (timm's version, why the float64 oracle is unavailable).
    /// </summary>
    public static ReferenceBundle Reference(ScenarioContext context, string op, string dir, DType dtype, IReadOnlyList<string> modules,
        (string, Tensor)[] inputs, JsonObject? args = null, IReadOnlyDictionary<string, string>? versions = null, params string[] reported)
    {
        var client = context.Client!;
        args ??= [];
        args["model_dir"] = client.WorkerPath(dir);
        args["dtype"] = dtype.TorchName();
        args["capture"] = new JsonArray(modules.Select(m => (JsonNode)m!).ToArray());
        var reply = client.Invoke(op, args, inputs);
        var all = new Dictionary<string, string>(context.Versions());
        foreach (var (k, v) in versions ?? new Dictionary<string, string>()) all[k] = v;
        foreach (var key in reported)
            if (reply.Result[key] is JsonNode value) all[key] = (string)value!;
        return new ReferenceBundle(reply.Tensors, null, all);
    }

    public static (LayerReport Layers, string? Error, string? FailedModule) Judge(ScenarioContext context, ReferenceBundle reference,
        string dir, IReadOnlyList<string> modules, TolerancePolicy policy, Action<Checkpoint, IActivationSink> forward)
    {
        var capture = new ActivationCapture(modules);
        var sink = new CaptureSink(capture, context.ReportModule) { Tap = context.Tap };
        string? error = null, failedModule = null;
        try
        {
            using var invariant = ComputeSettings.UseBatchInvariant();
            using var checkpoint = Checkpoint.Open(dir);
            forward(checkpoint, sink);
        }
        catch (Exception e)
        {
            (failedModule, error) = EngineFailures.Settle(e, capture, modules);   // the same rows whichever rank failed first
        }
        var compared = LayerComparison.Select(reference.Tensors, modules);     // the modules, with their float64 oracle captures
        return (LayerComparison.Run(compared, capture, modules, _ => policy), error, failedModule);
    }
}
