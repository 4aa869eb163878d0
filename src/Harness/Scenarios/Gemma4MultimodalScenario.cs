using Harness.Engine.Capture;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.Models.Gemma4.Vision;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// The engine's Gemma4 text side (the multimodal embedders, the merge of Gemma4Model.forward and the decoder under
/// model.language_model) against HF's Gemma4ForConditionalGeneration on a prompt with image and/or audio soft tokens.
/// The vision and audio towers run in the reference (decoder eager, audio tower sdpa: HF's audio attention is wrong
/// under eager, transformers issue 48818) and their outputs are handed to the engine, as an engine receives encoder
/// outputs; embed_vision / embed_audio and everything after them are the engine's.
/// On a user's checkpoint with the processor's tensors (<see cref="ForCheckpoint"/>, `compare --image FILE --audio FILE`)
/// the engine runs its OWN towers (<see cref="Gemma4VisionModel"/>, <see cref="Gemma4AudioModel"/>, whole on every rank)
/// on the same pixel values and features, and their modules are judged too (the reference's vision tower under sdpa,
/// whose semantics the engine's follows, as the tower scenarios run it).
/// </summary>
public sealed record Gemma4MultimodalScenario : Scenario
{
    /// <summary>The greedy tokens decoded by default (compare --max-new-tokens sets <see cref="NewTokens"/>).</summary>
    public const int DefaultNewTokens = 4;

    /// <inheritdoc/>
    public override int NewTokens { get; init; } = DefaultNewTokens;

    public const int TopK = 5;
    public static readonly string[] Inputs3 = ["image", "audio", "mixed"];

    /// <summary>A checkpoint prompt's video (compare --video FILE): the frames through the engine's vision tower.</summary>
    public const string VideoInput = "video";

    public int Tp { get; }
    public string Modality { get; private init; }
    public string Shape { get; }

    /// <summary>A user's Gemma4ForConditionalGeneration folder (`compare`) instead of the tiny model.</summary>
    public string? ModelPath { get; private init; }

    /// <summary>
    /// The checkpoint processor's tensors (input_ids, pixel_values, image_position_ids, mm_token_type_ids, input_features,
    /// input_features_mask): the prompt of both sides, the engine's towers run on them. Null: the seeded tiny prompt.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor>? Processed { get; private init; }

    /// <summary>The towers' depths (vision_config / audio_config num_hidden_layers) when the engine runs its own towers.</summary>
    public (int Vision, int Audio) TowerLayers { get; private init; }

    /// <summary>Whether the engine runs its own towers on the processor's tensors (a checkpoint compare with files).</summary>
    public bool EngineTowers => Processed is not null;

    /// <summary>The processor outputs the model takes (attention_mask is all ones for one prompt; num_soft_tokens_* are counts).</summary>
    public static readonly string[] ProcessedNames =
        ["input_ids", "pixel_values", "image_position_ids", "mm_token_type_ids", "input_features", "input_features_mask",
         "pixel_values_videos", "video_position_ids"];

    /// <summary>
    /// `compare --image FILE / --video FILE / --audio FILE` on a Gemma4ForConditionalGeneration folder: the processor's tensors
    /// are the prompt, the engine's towers run on them (a video's frames through the vision tower, as HF's get_video_features
    /// runs them). <paramref name="files"/> names the files, <paramref name="tag"/> hashes them. An image and a video together
    /// are refused before this (the vision tower's modules are judged on one input).
    /// </summary>
    public static Gemma4MultimodalScenario ForCheckpoint(string modelPath, int tp, DType dtype, IReadOnlyDictionary<string, Tensor> processed,
        string files, string tag)
    {
        var full = Path.GetFullPath(modelPath);
        var kept = processed.Where(kv => ProcessedNames.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        bool image = kept.ContainsKey("pixel_values"), audio = kept.ContainsKey("input_features"), video = kept.ContainsKey("pixel_values_videos");
        if (video && image) throw new ArgumentException("an image and a video in one prompt: the vision tower's modules are judged on one input");
        var configPath = Path.Combine(full, "config.json");
        var layers = (image || video ? Gemma4VisionConfig.Load(configPath).NumHiddenLayers : 0, audio ? Gemma4AudioConfig.Load(configPath).NumHiddenLayers : 0);
        var ids = kept["input_ids"].ToInt64Array();
        var baseScenario = new Gemma4MultimodalScenario(image && audio ? "mixed" : image ? "image" : "audio", tp, dtype);
        return baseScenario with
        {
            Modality = video ? (audio ? "video+audio" : VideoInput) : baseScenario.Modality,
            ModelPath = full,
            Processed = kept,
            TowerLayers = layers,
            Input = "files",
            Id = BuildId("checkpoint", [Path.GetFileName(full.TrimEnd('/')), baseScenario.Layout, "files"], dtype),
            ReferenceKey = $"checkpoint-{full}-{DTypeTag(dtype)}-files-{tag}-{string.Join('.', ids)}",
            Description = $"HF Gemma4 checkpoint {full}, TP={tp}, the prompt from the checkpoint's processor with {files} through the engine's own towers, {dtype.TorchName()}",
        };
    }

    [SetsRequiredMembers]
    public Gemma4MultimodalScenario(string input, int tp, DType dtype, string? fault = null, string? expectedFirstBadModule = null, string shape = "e2b-like")
    {
        Shape = shape;
        if (!Inputs3.Contains(input)) throw new ArgumentException($"unknown Gemma4 multimodal input '{input}'; known: {string.Join(", ", Inputs3)}");
        Modality = input;
        Tp = tp;
        Id = BuildId("gemma4", [shape, $"tp{tp}", input], dtype, fault);
        Fault = fault;
        ExpectedFirstBadModule = expectedFirstBadModule;
        Model = "gemma4";
        Layout = $"tp{tp}";
        DType = dtype;
        Input = input;
        Tolerance = Policy(dtype, tp).Name;
        ReferenceKey = $"gemma4-{shape}-mm-{DTypeTag(dtype)}-{input}";
        Description = $"tiny Gemma4ForConditionalGeneration ({shape} decoder) with {input} soft tokens from the reference's towers, TP={tp}, {dtype.TorchName()}" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    /// <summary>
    /// float32 here runs a residual stream of scale ~16 (measured on this model's mixed prompt: layer outputs up to 17.3,
    /// rms 5; the soft-token rows are the largest), where one float32 ulp is 1.9e-6 and a few dozen ops drift by ~10 ulps:
    /// float32-gemm's atol (1e-5, set for unit-scale tensors) scaled by 16. Measured worst: 2.3e-5 at an element of 0.28
    /// in a row of max 12.4. The bugs this guards (a wrong merge, a wrong norm or projection) move elements by O(0.1).
    /// </summary>
    public static readonly TolerancePolicy Float32ScaledResidual = new("float32-gemm-scale16", 1e-5, 1.6e-4,
        "float32 GEMMs on a residual stream of scale ~16: float32-gemm's atol times the scale");

    public static TolerancePolicy Policy(DType dtype, int tp) => dtype == DType.Float32 ? Float32ScaledResidual : Gemma4Scenario.Policy(dtype, tp);

    // a checkpoint's prompt holds what its processor made; the catalog's, what its input names
    private bool HasImage => Processed is not null ? Processed.ContainsKey("pixel_values") : Modality is "image" or "mixed";
    private bool HasAudio => Processed is not null ? Processed.ContainsKey("input_features") : Modality is "audio" or "mixed";

    /// <summary>Whether the prompt holds a video (a checkpoint's processed prompt only): the vision tower runs on its frames.</summary>
    public bool HasVideo => Processed?.ContainsKey("pixel_values_videos") ?? false;

    /// <summary>Whether the vision tower runs (an image, or a video's frames).</summary>
    private bool HasVision => HasImage || HasVideo;

    private string ModelDirectory(ScenarioContext context) => ModelPath is not null
        ? context.Client is null ? ModelPath : context.Client.ShareDirectory(ModelPath)
        : context.ModelDirectory($"tiny-gemma4-{Shape}-mm", DType, (client, dir) =>
        {
            client.Invoke("gemma4_build", new JsonObject
            {
                ["config"] = TinyGemma4.MultimodalConfig(Shape), ["seed"] = TinyGemma4.Seed, ["dtype"] = DType.TorchName(),
                ["out_dir"] = client.WorkerPath(dir), ["model_class"] = "Gemma4ForConditionalGeneration", ["oracle"] = false,
            });
            return dir;
        });

    /// <summary>[bos, 10, (boi, image x4, eoi,) 11, (boa, audio x8, eoa,) 12]</summary>
    public long[] PromptIds()
    {
        if (Processed is not null) return Processed["input_ids"].ToInt64Array();
        var ids = new List<long> { 4, 10 };
        if (HasImage) ids.AddRange([TinyGemma4.BoiTokenId, .. Enumerable.Repeat((long)TinyGemma4.ImageTokenId, 4), TinyGemma4.EoiTokenId]);
        ids.Add(11);
        if (HasAudio) ids.AddRange([TinyGemma4.BoaTokenId, .. Enumerable.Repeat((long)TinyGemma4.AudioTokenId, 8), TinyGemma4.EoaTokenId]);
        ids.Add(12);
        return ids.ToArray();
    }

    /// <summary>The towers' inputs: a 6x6 grid of 4x4 patches (x, y positions) and 32 frames of 16 mel bins (all valid).</summary>
    public IReadOnlyDictionary<string, Tensor> TowerInputs()
    {
        if (Processed is not null) return Processed.Where(kv => kv.Key != "input_ids").ToDictionary(kv => kv.Key, kv => kv.Value);
        var d = new Dictionary<string, Tensor>();
        if (HasImage)
        {
            d["pixel_values"] = Tensor.Uniform(DType.Float32, 77, 0, 1, 1, 36, 48);
            var pos = new long[36 * 2];
            for (int i = 0; i < 36; i++) { pos[2 * i] = i % 6; pos[2 * i + 1] = i / 6; }
            d["image_position_ids"] = Tensor.FromArray(pos, 1, 36, 2);
            d["mm_token_type_ids"] = Tensor.FromArray(PromptIds().Select(id => id == TinyGemma4.ImageTokenId ? 1L : 0L).ToArray(), 1, PromptIds().Length);
        }
        if (HasAudio)
        {
            d["input_features"] = Tensor.Normal(DType.Float32, 78, 0, 1, 1, 32, 16);
            d["input_features_mask"] = Tensor.FromArray(Enumerable.Repeat(true, 32).ToArray(), 1, 32);
        }
        return d;
    }

    private (string Name, Tensor Value)[] AllInputs() =>
        [("input_ids", Tensor.FromArray(PromptIds(), 1, PromptIds().Length)), .. TowerInputs().Select(kv => (kv.Key, kv.Value))];

    /// <summary>The compared modules in forward order: the HF paths captured, then the final logits.</summary>
    public IReadOnlyList<string> Modules(Gemma4TextConfig config) => [.. CapturePaths(config), "logits"];

    /// <summary>The modules judged at every decode step: the text decoder's (the towers and embedders run at the prefill only).</summary>
    public static IReadOnlyList<string> StepModules(Gemma4TextConfig config) => TinyGemma4.Modules(config, "model.language_model.");

    private List<string> CapturePaths(Gemma4TextConfig config)
    {
        var list = new List<string>();
        // the towers: their output (the reference's, handed to the engine), or every module of the engine's own towers
        // (a video's frames go through the same vision tower and embed_vision: HF's get_video_features)
        if (HasVision) list.AddRange(EngineTowers ? TinyGemma4Towers.VisionModules(TowerLayers.Vision) : ["model.vision_tower"]);
        if (HasVision) list.Add("model.embed_vision");
        if (HasAudio) list.AddRange(EngineTowers ? [.. TinyGemma4Towers.AudioModules(TowerLayers.Audio), "model.audio_tower"] : ["model.audio_tower"]);
        if (HasAudio) list.Add("model.embed_audio");
        list.AddRange(TinyGemma4.Modules(config, "model.language_model."));
        return list;
    }

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context) => AllInputs().ToDictionary(i => i.Name, i => i.Value);

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["model_seed"] = ModelPath is null ? TinyGemma4.Seed.ToString(CultureInfo.InvariantCulture) : "n/a",
        ["config"] = ModelPath is null ? TinyGemma4.MultimodalConfig(Shape).ToJsonString() : $"from {ModelPath}",
        ["new_tokens"] = NewTokens.ToString(CultureInfo.InvariantCulture),
        ["attn_implementation"] = $"text eager, vision {(EngineTowers ? "sdpa" : "eager")}, audio sdpa",
    };

    public override ReferenceBundle ComputeReference(ScenarioContext context)
    {
        var client = context.Client!;
        var dir = ModelDirectory(context);
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        var args = new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir), ["dtype"] = DType.TorchName(),
            ["capture"] = new JsonArray(CapturePaths(config).Select(m => (JsonNode)JsonValue.Create(m)).ToArray()),
            ["vision_attn"] = EngineTowers ? Gemma4TowerScenario.ReferenceAttention : null,
        };
        var reply = client.Invoke("gemma4_mm_forward", args, AllInputs());
        var gen = client.Invoke("gemma4_mm_generate", new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir), ["dtype"] = DType.TorchName(), ["max_new_tokens"] = NewTokens, ["top_k"] = TopK,
            ["vision_attn"] = EngineTowers ? Gemma4TowerScenario.ReferenceAttention : null,
            ["capture_steps"] = new JsonArray((JudgeSteps ? StepModules(config) : []).Select(m => (JsonNode)JsonValue.Create(m)).ToArray()),
        }, AllInputs());
        var versions = new Dictionary<string, string>(context.Versions());
        if (reply.Result["vision_mask"]?.GetValue<string>() is string rule) versions[VisionMaskKey] = rule;   // recorded with the fixture
        // the greedy tokens with, under the oracle, the float64 model's logprobs teacher-forced on them (the towers in its prompt)
        var tensors = new Dictionary<string, Tensor>(reply.Tensors);
        foreach (var (name, t) in Reference.ReferenceClient.StepCapturesOf(gen.Tensors)) tensors[name] = t;   // every decode step's modules
        return new ReferenceBundle(tensors, TokenSequence.FromReply(gen.Tensors), versions);
    }

    /// <summary>The reference metadata key naming the vision-block mask rule HF's masks were measured to follow.</summary>
    public const string VisionMaskKey = "gemma4_vision_mask";

    /// <summary>
    /// The engine follows the vision-block mask its reference was measured to use (transformers 5.12.1 builds Gemma 3's rule,
    /// later releases Gemma 4's: <see cref="Gemma4VisionMask"/>), so one catalog passes against either environment and a
    /// recording says which rule it holds. A prompt without image tokens, or a config without
    /// use_bidirectional_attention="vision", leaves the rule unobserved (both are the causal masks then).
    /// </summary>
    public Gemma4VisionMask VisionMaskOf(ReferenceBundle reference, Gemma4TextConfig config)
    {
        if (!HasVision || config.UseBidirectionalAttention != "vision") return Gemma4Options.Default.VisionMask;
        if (!reference.Versions.TryGetValue(VisionMaskKey, out var rule))
            throw new KeyNotFoundException($"the reference does not say which vision-block mask it used ('{VisionMaskKey}' metadata)");
        return rule switch
        {
            "gemma4-sliding-layers-only" => Gemma4VisionMask.SlidingLayersOnly,
            "gemma3-all-layers" => Gemma4VisionMask.Gemma3AllLayers,
            _ => throw new ArgumentException($"the reference's '{VisionMaskKey}' is '{rule}'; known: gemma4-sliding-layers-only, gemma3-all-layers"),
        };
    }

    /// <summary>The tower a module belongs to (judged by the tower scenarios' policies), or null for the embedders and the decoder.</summary>
    private static Gemma4Tower? TowerOf(string module) =>
        module.StartsWith(Gemma4VisionModel.DefaultPrefix, StringComparison.Ordinal) ? Gemma4Tower.Vision
        : module.StartsWith(Gemma4AudioModel.DefaultPrefix, StringComparison.Ordinal) ? Gemma4Tower.Audio : null;

    /// <summary>
    /// The engine's own towers on the processor's tensors, once, whole (TP splits the decoder and the embedders, not the
    /// towers), recording their modules; --fault matmul-no-nd-broadcast builds them on the pre-fix batch-invariant matmul.
    /// </summary>
    private Gemma4ForConditionalGeneration.TowerOutputs RunTowers(string dir, IActivationSink sink)
    {
        var configPath = Path.Combine(dir, "config.json");
        var matmul = Engine.Models.FaultMap.Plan(Fault, "gemma4").Matmul;
        var inputs = TowerInputs();
        using var checkpoint = Checkpoint.Open(dir);
        IWeightSource weights = new CheckpointWeights(checkpoint, DType);
        IActivationSink towerSink = sink;
        // --device cuda: the towers on the GPU as the catalog's tower scenarios run them (one rank, its own stream, host-copy
        // captures); their soft tokens come back to the host and go to each decoder rank as the reference's tower outputs do
        using var gpu = CudaScenarios.OnGpu(Device, ref weights, ref towerSink);
        Tensor? vision = null, audio = null, audioMask = null, video = null;
        if (HasImage)
        {
            var tower = new Gemma4VisionModel(weights, Gemma4VisionConfig.Load(configPath), towerSink, matmul);
            // [1, patches, 3 * patch_size^2] with (x, y) positions [1, patches, 2] -> [image tokens, vision hidden]
            vision = tower.Forward(CudaScenarios.Input(Device, inputs["pixel_values"].To(DType))!, inputs["image_position_ids"]).SoftTokens.ToHost();   // positions: a host input
        }
        if (HasVideo)
        {
            var tower = new Gemma4VisionModel(weights, Gemma4VisionConfig.Load(configPath), towerSink, matmul);
            // pixel_values_videos = pixel_values_videos.flatten(0, 1); video_position_ids = video_position_ids.flatten(0, 1)
            var frames = inputs["pixel_values_videos"];                                  // [1, frames, patches, 3 * patch_size^2]
            var positions = inputs["video_position_ids"];                                // [1, frames, patches, 2]
            if (frames.Rank != 4 || positions.Rank != 4)
                throw new ArgumentException($"pixel_values_videos {Engine.Tensors.Shape.Format(frames.Shape)} and video_position_ids {Engine.Tensors.Shape.Format(positions.Shape)} must be [videos, frames, patches, ...]");
            video = tower.Forward(CudaScenarios.Input(Device, frames.Reshape(-1, frames.Size(2), frames.Size(3)).To(DType))!,   // [videos * frames, patches, 3p^2]
                positions.Reshape(-1, positions.Size(2), positions.Size(3))).SoftTokens.ToHost();   // -> [video tokens, vision hidden]; positions: a host input
        }
        if (HasAudio)
        {
            var tower = new Gemma4AudioModel(weights, Gemma4AudioConfig.Load(configPath), towerSink, matmul);
            var mask = Tensor.FromArray(TinyGemma4Towers.MaskValues(inputs["input_features_mask"]), inputs["input_features_mask"].ShapeArray);
            var output = tower.Forward(CudaScenarios.Input(Device, inputs["input_features"].To(DType))!, mask);   // [1, frames', output_proj_dims], [1, frames']
            if (towerSink.Wants(Gemma4AudioModel.DefaultPrefix)) towerSink.Record(Gemma4AudioModel.DefaultPrefix, 0, output.SoftTokens, Engine.Capture.ShardSpec.Whole);
            audio = output.SoftTokens.ToHost();
            audioMask = Tensor.FromArray(output.Mask.ToHost().Contiguous().Span<bool>().ToArray().Select(v => v ? 1L : 0L).ToArray(), output.Mask.ShapeArray);   // 1 = valid frame
        }
        return new Gemma4ForConditionalGeneration.TowerOutputs(vision, audio, audioMask, video);
    }

    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var dir = context.EngineDirectory(ModelDirectory(context));
        var hf = HfConfig.Load(Path.Combine(dir, "config.json"));
        var config = Gemma4TextConfig.From(hf);
        var modules = Modules(config);
        var capture = new ActivationCapture(modules);
        var sink = new CaptureSink(capture, context.ReportModule) { Tap = context.Tap };
        var stepModules = StepModules(config);                                     // every decode step, module by module
        var stepCapture = new ActivationCapture(DecodeSteps.Names(NewTokens, stepModules));
        var stepSink = JudgeSteps ? CaptureSink.DecodeSteps(stepCapture, NewTokens, context.ReportModule, context.Tap) : null;
        // The towers are the reference's: their outputs are the engine's inputs (compared as themselves, trivially equal);
        // on a checkpoint's processed prompt the engine runs its own towers (in the try below: a tower that fails is named).
        Gemma4ForConditionalGeneration.TowerOutputs? towers = null;
        if (!EngineTowers)
        {
            towers = new Gemma4ForConditionalGeneration.TowerOutputs(
                HasImage ? reference.Tensors["model.vision_tower"] : null,
                HasAudio ? reference.Tensors["model.audio_tower"] : null,
                HasAudio ? reference.Tensors["audio_tower.mask"] : null);
            foreach (var tower in new[] { "model.vision_tower", "model.audio_tower" })
                if (reference.Tensors.TryGetValue(tower, out var t)) capture.Record(tower, t.Clone(), Engine.Capture.ShardSpec.Whole, 0);
        }
        var prompt = Tensor.FromArray(PromptIds(), PromptIds().Length);
        var visionMask = VisionMaskOf(reference, config);
        TokenSequence? engineTokens = null, engineForced = null;
        string? error = null, failedModule = null;
        try
        {
            // the weights must be the text decoder's tensors this config declares (a wrong width in config.json is named here)
            CheckpointValidator.Validate(dir, Gemma4Tensors.Expected(config));
            towers ??= RunTowers(dir, sink);
            var gens = ThreadWorld.Run(Tp, rank =>
            {
                var ctx = ThreadWorld.Layout(rank, Tp, 1);
                using var checkpoint = Checkpoint.Open(dir);
                IWeightSource weights = new CheckpointWeights(checkpoint, DType);
                IActivationSink rankSink = sink;
                using var gpu = CudaScenarios.OnGpu(Device, ref ctx, ref weights, ref rankSink);   // --device cuda: this rank on the GPU
                var rankTowers = new Gemma4ForConditionalGeneration.TowerOutputs(CudaScenarios.Input(Device, towers.Vision),
                    CudaScenarios.Input(Device, towers.Audio), towers.AudioMask,        // the mask stays a host input
                    CudaScenarios.Input(Device, towers.Video));
                var options = Engine.Models.FaultMap.Plan(Fault, "gemma4").Gemma4 with { VisionMask = visionMask };
                var prefill = new PrefillSink(rankSink);                               // one model: the captured prefill, then decoding
                var model = new Gemma4ForConditionalGeneration(weights, hf, ctx, prefill, options);
                var logits = model.Prefill(prompt, rankTowers);                        // the captured prefill
                if (prefill.Wants("logits")) prefill.Record("logits", ctx.WorldRank, logits.Unsqueeze(0), Harness.Engine.Capture.ShardSpec.Whole);
                prefill.Enabled = false;
                var free = model.Generate(prompt, rankTowers, NewTokens, TopK);
                // teacher-forced on the reference's tokens (the one decode loop's forced option), every decoder module recorded
                // at every decode step; the token verdict reads it after a divergence
                IActivationSink? rankSteps = Device == "cuda" && stepSink is not null ? new HostCopySink(stepSink) : stepSink;
                prefill.Steps = rankSteps;
                var forced = reference.Tokens is { Length: > 1 } rt && (rankSteps is not null || TokenComparison.ForcedTokensFor(reference.Tokens, free.Tokens) is not null)
                    ? model.Generate(prompt, rankTowers, NewTokens, TopK, forced: rt.Tokens) : null;
                return (Free: free, Forced: TokenComparison.ForcedTokensFor(reference.Tokens, free.Tokens) is null ? null : forced);
            }, context.CollectiveTimeout);
            engineTokens = TokenSequence.FromTopK(gens[0].Free.Tokens, gens[0].Free.TopKIds, gens[0].Free.TopKLogprobs);
            engineForced = gens[0].Forced is { } f ? TokenSequence.FromTopK(f.Tokens, f.TopKIds, f.TopKLogprobs) : null;
        }
        catch (Exception e)
        {
            (failedModule, error) = EngineFailures.Settle(e, capture, modules);   // the same rows whichever rank failed first
        }
        var policy = Policy(DType, Tp);
        var compared = LayerComparison.Select(reference.Tensors, modules);     // the modules, with their float64 oracle captures
        var layers = LayerComparison.Run(compared, capture, modules, m => TowerOf(m) is { } tower ? Gemma4TowerScenario.Policy(DType, tower) : policy);
        var tokens = engineTokens is null || reference.Tokens is null ? null : TokenComparison.ForScenario(reference.JudgedTokens!, engineTokens, DType,
            engineForced, margin: DType == DType.Float32 ? TokenComparison.DefaultMargin : Gemma4Scenario.Bf16LogitUlp);
        return new ScenarioResult(this, layers, tokens, error, failedModule, sw.Elapsed)
        {
            TokensExpected = true,
            ReferenceTokens = reference.Tokens,
            EngineTokens = engineTokens,
            EngineForcedTokens = engineForced,
            Steps = JudgeSteps && error is null ? DecodeSteps.Judge(reference.Tensors, stepCapture, NewTokens, stepModules, _ => policy) : null,
        };
    }
}
