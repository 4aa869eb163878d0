using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
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
    public const int NewTokens = 6, TopK = 5;

    public int Tp { get; }
    /// <summary>Sequence parallelism over the TP ranks in the decoder.</summary>
    public bool Sp { get; }
    public Qwen2VlMedia Media { get; }

    /// <summary>An HF checkpoint folder to compare on instead of the tiny random model (`harness compare --model DIR`).</summary>
    public string? ModelPath { get; init; }

    /// <summary>Explicit text token ids around the media (overrides the seeded ones).</summary>
    public long[]? TextIds { get; init; }

    /// <summary>How many seeded text tokens go around the media.</summary>
    public int TextTokens { get; init; } = 7;

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

    public IReadOnlyList<string> ModulesFor(Qwen2VlConfig config) =>
        TinyQwen2Vl.Modules(Media != Qwen2VlMedia.Text, config.Text.NumHiddenLayers, config.VisionDepth);

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context)
    {
        var config = LoadConfig(ModelDirectory(context));
        var ids = PromptIds(config);
        var inputs = new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray(ids, 1, ids.Length) };
        foreach (var (name, pixels, _) in Pictures(config)) inputs[name] = pixels;
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
        };
        var reply = client.Invoke("qwen2vl_generate", args, Inputs(context).Select(kv => (kv.Key, kv.Value)).ToArray());
        var tokens = TokenSequence.FromTopK(reply.Need("tokens").ToInt64Array(), ToMatrix(reply.Need("topk_ids").ToInt64Array(), TopK),
            ToMatrix(reply.Need("topk_logprobs").ToFloatArray(), TopK));
        return new ReferenceBundle(reply.Tensors, tokens, context.Versions());
    }

    private static T[,] ToMatrix<T>(T[] flat, int k)
    {
        var m = new T[flat.Length / k, k];
        for (int i = 0; i < flat.Length; i++) m[i / k, i % k] = flat[i];
        return m;
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
        // The reported bug reaches the model as a constructor option; any other named fault is injected as before.
        var options = Qwen2VlOptions.ForFault(Fault);
        TokenSequence? engineTokens = null;
        string? error = null, failedModule = null;
        {
            try
            {
                var generations = ThreadWorld.Run(Tp, rank =>
                {
                    var ctx = ThreadWorld.Layout(rank, Tp, 1, Sp);
                    using var checkpoint = Checkpoint.Open(engineDir);
                    IWeightSource weights = new CheckpointWeights(checkpoint);
                    IActivationSink rankSink = sink;
                    using var gpu = CudaScenarios.OnGpu(Device, ref ctx, ref weights, ref rankSink);   // --device cuda: this rank on the GPU
                    var rankInput = input with
                    {
                        PixelValues = CudaScenarios.Input(Device, input.PixelValues),
                        PixelValuesVideos = CudaScenarios.Input(Device, input.PixelValuesVideos),
                    };
                    var prefillOnly = new PrefillSink(rankSink);
                    var model = new Qwen2VlForConditionalGeneration(weights, config, ctx, prefillOnly, options);
                    return model.Generate(rankInput, NewTokens, TopK, afterPrefill: () => prefillOnly.Enabled = false,
                        prefillLogitsToKeep: 0);                                      // the prefill's lm_head is captured whole
                }, context.CollectiveTimeout);
                engineTokens = TokenSequence.FromTopK(generations[0].Tokens, generations[0].TopKIds, generations[0].TopKLogprobs);
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
        var tokens = engineTokens is null || reference.Tokens is null ? null : TokenComparison.Run(reference.Tokens, engineTokens,
            logprobTolerance: DType == DType.Float32 ? TokenComparison.DefaultLogprobTolerance : 5e-2);
        return new ScenarioResult(this, layers, tokens, error, failedModule, sw.Elapsed)
        {
            TokensExpected = true,
            ReferenceTokens = reference.Tokens,
            EngineTokens = engineTokens,
        };
    }

    /// <summary>Records the prompt's forward only (decode steps run the same modules again).</summary>
    private sealed class PrefillSink(IActivationSink inner) : IActivationSink
    {
        public volatile bool Enabled = true;
        public bool Wants(string module) => Enabled && inner.Wants(module);
        public void Record(string module, int worldRank, Tensor value, Engine.Capture.ShardSpec shard)
        {
            if (Enabled) inner.Record(module, worldRank, value, shard);
        }
    }
}
