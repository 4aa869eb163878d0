using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>What goes into the prompt besides text: nothing, one image, two images of different grids, a 2-frame video.</summary>
public enum Qwen2VlMedia { Text, Image, TwoImages, Video }

/// <summary>
/// The engine's Qwen2-VL against HF's Qwen2VLForConditionalGeneration on the same weights (the tiny random model of
/// <see cref="TinyQwen2Vl"/>, or a user's checkpoint) at TP=1, 2 or 4. Synthetic pictures (seeded, made here) go
/// through HF's own Qwen2VLImageProcessor / Qwen2VLVideoProcessor in the reference; the engine takes the processor's
/// pixel_values and grids from the reference bundle (the processor is not ported). HF runs the prompt with hooks on the
/// vision tower, the merger and every decoder module, and greedy-decodes; the engine records the same modules on every
/// rank and decodes. Then layer by layer and token by token.
/// </summary>
public sealed record Qwen2VlScenario : Scenario
{
    /// <summary>The greedy tokens decoded by default (compare --max-new-tokens sets <see cref="NewTokens"/>).</summary>
    public const int DefaultNewTokens = 6;

    /// <inheritdoc/>
    public override int NewTokens { get; init; } = DefaultNewTokens;

    public const int TopK = 5;

    public int Tp { get; }
    /// <summary>Sequence parallelism over the TP ranks in the decoder.</summary>
    public bool Sp { get; }
    public Qwen2VlMedia Media { get; private init; }

    /// <summary>An HF checkpoint folder to compare on instead of the tiny random model (`harness compare --model DIR`).</summary>
    public string? ModelPath { get; init; }

    /// <summary>Explicit text token ids around the media (overrides the seeded ones).</summary>
    public long[]? TextIds { get; init; }

    /// <summary>How many seeded text tokens go around the media.</summary>
    public int TextTokens { get; init; } = 7;

    /// <summary>
    /// A user's prompt as the checkpoint's own processor made it (compare --image FILE / --video FILE): input_ids [1, T],
    /// pixel_values + image_grid_thw and/or pixel_values_videos + video_grid_thw. Both sides take these instead of the
    /// seeded ids and pictures.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor>? Processed { get; init; }

    /// <summary>The prompt <paramref name="processed"/> by the checkpoint's processor from the user's files (<paramref name="files"/>, in words).</summary>
    public Qwen2VlScenario WithProcessed(IReadOnlyDictionary<string, Tensor> processed, string files, string tag)
    {
        var media = processed.ContainsKey("pixel_values_videos") ? Qwen2VlMedia.Video : processed.ContainsKey("pixel_values") ? Qwen2VlMedia.Image : Qwen2VlMedia.Text;
        var kept = processed.Where(kv => ProcessedNames.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        return this with
        {
            Processed = kept,
            Media = media,
            Input = "files",
            Id = BuildId("checkpoint", [Path.GetFileName((ModelPath ?? "").TrimEnd('/')), Layout, "files"], DType),
            ReferenceKey = $"{ReferenceKey}-files-{tag}-{string.Join('.', kept["input_ids"].ToInt64Array())}",
            Description = $"HF Qwen2-VL checkpoint {ModelPath}, TP={Tp}{(Sp ? " with SP" : "")}, the prompt from the checkpoint's processor with {files}, {DType.TorchName()}",
        };
    }

    /// <summary>The processor outputs the model takes (attention_mask and mm_token_type_ids are made again from the ids).</summary>
    public static readonly string[] ProcessedNames = ["input_ids", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"];

    [SetsRequiredMembers]
    public Qwen2VlScenario(int tp, Qwen2VlMedia media, DType dtype = DType.Float32, string? fault = null, string? expectedFirstBadModule = null,
        bool sp = false)
    {
        Tp = tp;
        Sp = sp;
        Media = media;
        string input = InputName(media);
        Layout = $"tp{tp}{(sp ? "-sp" : "")}";
        Id = BuildId("qwen2-vl", [Layout, input], dtype, fault);
        Model = "qwen2-vl";
        DType = dtype;
        Input = input;
        Fault = fault;
        ExpectedFirstBadModule = expectedFirstBadModule;
        Tolerance = Policy(dtype, tp).Name;
        ReferenceKey = $"qwen2-vl-{DTypeTag(dtype)}-{input}";
        Description = $"tiny Qwen2-VL (M-RoPE decoder + vision tower), TP={tp}{(sp ? " with sequence parallelism" : "")}, {Describe(media)}, {dtype.TorchName()}" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    public static string InputName(Qwen2VlMedia media) => media switch
    {
        Qwen2VlMedia.Text => "text",
        Qwen2VlMedia.Image => "image",
        Qwen2VlMedia.TwoImages => "two-images",
        Qwen2VlMedia.Video => "video",
        _ => throw new ArgumentOutOfRangeException(nameof(media)),
    };

    private static string Describe(Qwen2VlMedia media) => media switch
    {
        Qwen2VlMedia.Text => "text-only prompt",
        Qwen2VlMedia.Image => "one image",
        Qwen2VlMedia.TwoImages => "two images of different grids",
        _ => "one 2-frame video",
    };

    public static TolerancePolicy Policy(DType dtype, int tp = 1) =>
        dtype == DType.Float32 ? Tolerances.Float32Gemm : Tolerances.BFloat16TensorParallel(tp);

    /// <summary>
    /// A Qwen2-VL scenario on a user's checkpoint folder (config.json + safetensors), text-only or with one synthetic image.
    /// </summary>
    public static Qwen2VlScenario ForCheckpoint(string modelPath, int tp, DType dtype, bool withImage, long[]? textIds, int textTokens = 7, bool sp = false)
    {
        var full = Path.GetFullPath(modelPath);
        var media = withImage ? Qwen2VlMedia.Image : Qwen2VlMedia.Text;
        var baseScenario = new Qwen2VlScenario(tp, media, dtype, sp: sp);
        string tag = textIds is null ? $"-{textTokens}" : "-" + string.Join('.', textIds);
        return baseScenario with
        {
            ModelPath = full,
            TextIds = textIds,
            TextTokens = textTokens,
            Id = BuildId("checkpoint", [Path.GetFileName(full.TrimEnd('/')), baseScenario.Layout, baseScenario.Input], dtype),
            ReferenceKey = $"checkpoint-{full}-{DTypeTag(dtype)}-{baseScenario.Input}{tag}",
            Description = $"HF Qwen2-VL checkpoint {full}, TP={tp}{(sp ? " with SP" : "")}, {Describe(media)}, {dtype.TorchName()}",
        };
    }

    private string ModelDirectory(ScenarioContext context)
    {
        if (ModelPath is not null)
            return context.Client is null ? ModelPath : context.Client.ShareDirectory(ModelPath);
        return context.ModelDirectory(TinyQwen2Vl.ModelName, DType, (client, dir) =>
        {
            client.BuildModel(TinyQwen2Vl.Config(), TinyQwen2Vl.Seed, DType, dir, "Qwen2VLForConditionalGeneration");
            return dir;
        });
    }

    private static Qwen2VlConfig LoadConfig(string dir) => Qwen2VlConfig.Load(Path.Combine(dir, "config.json"));

    /// <summary>The pictures (seeded, [H, W, 3] or [frames, H, W, 3] of 0..255), sized in whole merge blocks so the
    /// processor keeps them as they are, with the grids they make.</summary>
    public IReadOnlyList<(string Name, Tensor Pixels, GridThw Grid)> Pictures(Qwen2VlConfig config)
    {
        int u = config.PatchSize * config.SpatialMergeSize, p = config.PatchSize;
        if (Processed is not null) return [];                                         // the user's pictures are already pixel values
        (string, Tensor, GridThw) Still(string name, ulong seed, int hu, int wu) =>
            (name, TinyQwen2Vl.Picture(seed, hu * u, wu * u), new GridThw(1, hu * u / p, wu * u / p));
        return Media switch
        {
            Qwen2VlMedia.Text => [],
            Qwen2VlMedia.Image => [Still("image0", 11, 3, 2)],
            Qwen2VlMedia.TwoImages => [Still("image0", 11, 3, 2), Still("image1", 12, 1, 3)],
            _ => [("video0", TinyQwen2Vl.Picture(13, 2 * u, 2 * u, frames: 2),
                new GridThw((2 + config.TemporalPatchSize - 1) / config.TemporalPatchSize, 2 * u / p, 2 * u / p))],
        };
    }

    /// <summary>
    /// The prompt ids: seeded text tokens (below the special ids) around each picture's run of
    /// vision_start, placeholder x merged tokens, vision_end.
    /// </summary>
    public long[] PromptIds(Qwen2VlConfig config)
    {
        if (Processed is not null) return Processed["input_ids"].ToInt64Array();
        var rng = new SplitMix64(99);
        int low = 3, high = Math.Min(config.Text.VocabSize, Math.Min(config.ImageTokenId, config.VideoTokenId));
        var text = TextIds ?? Enumerable.Range(0, TextTokens).Select(_ => (long)(low + rng.NextInt(high - low))).ToArray();
        var pictures = Pictures(config);
        if (pictures.Count == 0) return text;
        var ids = new List<long>();
        int t = 0;
        for (int i = 0; i < pictures.Count; i++)
        {
            int before = i == 0 ? Math.Min(2, text.Length) : Math.Min(1, text.Length - t);
            for (int j = 0; j < before; j++) ids.Add(text[t++]);
            var (name, _, grid) = pictures[i];
            ids.Add(config.VisionStartTokenId);
            ids.AddRange(Enumerable.Repeat((long)(name.StartsWith("video", StringComparison.Ordinal) ? config.VideoTokenId : config.ImageTokenId),
                grid.MergedTokens(config.SpatialMergeSize)));
            ids.Add(config.VisionEndTokenId);
        }
        while (t < text.Length) ids.Add(text[t++]);
        return ids.ToArray();
    }

    /// <summary>The modules judged at every decode step: the text decoder's (the vision tower runs at the prefill only).</summary>
    public static IReadOnlyList<string> StepModulesFor(Qwen2VlConfig config) => TinyQwen2Vl.Modules(false, config.Text.NumHiddenLayers, config.VisionDepth);

    public IReadOnlyList<string> ModulesFor(Qwen2VlConfig config) =>
        TinyQwen2Vl.Modules(Media != Qwen2VlMedia.Text, config.Text.NumHiddenLayers, config.VisionDepth);

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context)
    {
        var config = LoadConfig(ModelDirectory(context));
        var ids = PromptIds(config);
        var inputs = new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray(ids, 1, ids.Length) };
        foreach (var (name, pixels, _) in Pictures(config)) inputs[name] = pixels;
        foreach (var (name, value) in Processed ?? new Dictionary<string, Tensor>())
            if (name != "input_ids") inputs[name] = value;                           // pixel_values, grids: as the processor made them
        return inputs;
    }

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["model_seed"] = ModelPath is null ? TinyQwen2Vl.Seed.ToString(CultureInfo.InvariantCulture) : "n/a",
        ["prompt_seed"] = "99",
        ["picture_seeds"] = "image0 11, image1 12, video0 13 (TinyQwen2Vl.Picture)",
        ["pixel_values"] = "made by HF's own Qwen2VLImageProcessor / Qwen2VLVideoProcessor (do_sample_frames=False) in the reference, " +
                           "with the model's patch_size, temporal_patch_size and merge_size, from the seeded pictures (processor.* tensors)",
        ["config"] = ModelPath is null ? TinyQwen2Vl.Config().ToJsonString() : $"from {ModelPath}",
        ["new_tokens"] = NewTokens.ToString(CultureInfo.InvariantCulture),
        ["top_k"] = TopK.ToString(CultureInfo.InvariantCulture),
    };

    public override ReferenceBundle ComputeReference(ScenarioContext context)
    {
        var client = context.Client!;
        var dir = ModelDirectory(context);
        var config = LoadConfig(dir);
        var args = new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir),
            ["dtype"] = DType.TorchName(),
            ["capture"] = new JsonArray(ModulesFor(config).Select(m => (JsonNode)JsonValue.Create(m)!).ToArray()),
            ["max_new_tokens"] = NewTokens,
            ["top_k"] = TopK,
            ["capture_steps"] = new JsonArray((JudgeSteps ? StepModulesFor(config) : []).Select(m => (JsonNode)JsonValue.Create(m)!).ToArray()),
        };
        var reply = client.Invoke("qwen2vl_generate", args, Inputs(context).Select(kv => (kv.Key, kv.Value)).Concat(ForcedTokensInput()).ToArray());
        // the greedy tokens with, under the oracle, the float64 model's logprobs teacher-forced on them (pixel values in its
        // prompt, the forced steps at M-RoPE position cache length + its rope delta)
        var tensors = reply.Tensors.Where(kv => !TokenSequence.ReplyNames.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        return new ReferenceBundle(tensors, TokenSequence.FromReply(reply.Tensors), context.Versions());
    }

    /// <summary>The engine's input: the prompt ids and the processor's pixel values and grids from the reference.</summary>
    public Qwen2VlInput EngineInput(Qwen2VlConfig config, ReferenceBundle reference)
    {
        reference.Tensors.TryGetValue("processor.pixel_values", out var pixels);
        reference.Tensors.TryGetValue("processor.image_grid_thw", out var imageGrid);
        reference.Tensors.TryGetValue("processor.pixel_values_videos", out var videoPixels);
        reference.Tensors.TryGetValue("processor.video_grid_thw", out var videoGrid);
        return new Qwen2VlInput(PromptIds(config))
        {
            PixelValues = pixels,
            ImageGrids = Qwen2VlInput.Grids(imageGrid),
            PixelValuesVideos = videoPixels,
            VideoGrids = Qwen2VlInput.Grids(videoGrid),
        };
    }

    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var dir = ModelDirectory(context);
        var engineDir = context.EngineDirectory(dir);
        var config = LoadConfig(engineDir);
        var input = EngineInput(config, reference);
        var modules = ModulesFor(config);
        var capture = new ActivationCapture(modules);
        var sink = new CaptureSink(capture, context.ReportModule) { Tap = context.Tap };
        var stepModules = StepModulesFor(config);                                  // every decode step, module by module
        var stepCapture = new ActivationCapture(DecodeSteps.Names(NewTokens, stepModules));
        var stepSink = JudgeSteps ? CaptureSink.DecodeSteps(stepCapture, NewTokens, context.ReportModule, context.Tap) : null;
        // The reported bug reaches the model as a constructor option; any other named fault is injected as before.
        var options = FaultMap.Plan(Fault, "qwen2-vl").Qwen2Vl;
        TokenSequence? engineTokens = null, engineForced = null;
        string? error = null, failedModule = null;
        {
            try
            {
                var generations = ThreadWorld.Run(Tp, rank =>
                {
                    var ctx = ThreadWorld.Layout(rank, Tp, 1, Sp);
                    using var checkpoint = Checkpoint.Open(engineDir);
                    IWeightSource weights = new CheckpointWeights(checkpoint, DType);
                    IActivationSink rankSink = sink;
                    using var gpu = CudaScenarios.OnGpu(Device, ref ctx, ref weights, ref rankSink);   // --device cuda: this rank on the GPU
                    var rankInput = input with
                    {
                        PixelValues = CudaScenarios.Input(Device, input.PixelValues),
                        PixelValuesVideos = CudaScenarios.Input(Device, input.PixelValuesVideos),
                    };
                    var prefillOnly = new PrefillSink(rankSink);
                    var model = new Qwen2VlForConditionalGeneration(weights, config, ctx, prefillOnly, options);
                    var free = model.Generate(rankInput, NewTokens, TopK, afterPrefill: () => prefillOnly.Enabled = false,
                        prefillLogitsToKeep: 0);                                      // the prefill's lm_head is captured whole
                    // teacher-forced on the reference's tokens (the one decode loop's forced option; each forced step at
                    // M-RoPE position cache length + the prompt's rope delta, as a free step), every decoder module recorded at
                    // every decode step; the token verdict reads it after a divergence
                    IActivationSink? rankSteps = Device == "cuda" && stepSink is not null ? new HostCopySink(stepSink) : stepSink;
                    prefillOnly.Steps = rankSteps;                                    // the same model: its decode steps to the step sink
                    var forced = reference.Tokens is { Length: > 1 } rt && (rankSteps is not null || TokenComparison.ForcedTokensFor(reference.Tokens, free.Tokens) is not null)
                        ? model.Generate(rankInput, NewTokens, TopK, forced: rt.Tokens) : null;
                    return (Free: free, Forced: TokenComparison.ForcedTokensFor(reference.Tokens, free.Tokens) is null ? null : forced);
                }, context.CollectiveTimeout);
                engineTokens = TokenSequence.FromTopK(generations[0].Free.Tokens, generations[0].Free.TopKIds, generations[0].Free.TopKLogprobs);
                engineForced = generations[0].Forced is { } f ? TokenSequence.FromTopK(f.Tokens, f.TopKIds, f.TopKLogprobs) : null;
            }
            catch (Exception e)
            {
                (failedModule, error) = EngineFailures.Settle(e, capture, modules);   // the same rows whichever rank failed first
            }
        }
        var policy = Policy(DType, Tp);
        // The captured modules and their float64 oracle captures; the processor's outputs and the tokens are not modules.
        var compared = LayerComparison.Select(reference.Tensors, modules);
        var layers = LayerComparison.Run(compared, capture, modules, _ => policy);
        var tokens = engineTokens is null || reference.Tokens is null ? null
            : TokenComparison.ForScenario(reference.JudgedTokens!, engineTokens, DType, engineForced);
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
