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
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma3n.Audio;
using Harness.Engine.Models.Gemma3n.Vision;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>What a Gemma3n prompt carries: text only; hard vision and audio ids; image and audio soft tokens.</summary>
public enum Gemma3nInput { Text, HardTokens, SoftTokens }

/// <summary>
/// The engine's Gemma3n against HF's Gemma3nForConditionalGeneration (vision tower stubbed, everything else HF's) on
/// the tiny random model of <see cref="TinyGemma3n"/>: the reference runs the prompt with hooks on the decoder's
/// modules, both embedders and the merged embeddings, and greedy-decodes; it hands the engine the towers' outputs
/// (image soft tokens after the sqrt(C) scale, audio soft tokens) as an inference engine receives encoder outputs.
/// The engine runs at TP ranks (threads) and records the same modules. Then layer by layer and token by token.
/// </summary>
public sealed record Gemma3nScenario : Scenario
{
    /// <summary>The greedy tokens decoded by default (compare --max-new-tokens sets <see cref="NewTokens"/>).</summary>
    public const int DefaultNewTokens = 4;

    /// <inheritdoc/>
    public override int NewTokens { get; init; } = DefaultNewTokens;

    public const int TopK = 5;

    public int Tp { get; }
    public Gemma3nInput Kind { get; private init; }

    /// <summary>A user's HF checkpoint folder (`harness compare --model DIR`) instead of the tiny model.</summary>
    public string? ModelPath { get; init; }

    /// <summary>Explicit prompt ids (compare); otherwise the seeded prompt of <see cref="Kind"/>.</summary>
    public long[]? PromptIds { get; init; }

    /// <summary>
    /// The checkpoint processor's audio and image tensors (`compare --audio FILE.wav`: input_features [1, frames, mel],
    /// input_features_mask [1, frames]; `compare --image FILE`: pixel_values [1, 3, H, W]): both sides run their own towers
    /// on them (the engine's <see cref="Gemma3nAudioEncoder"/> and <see cref="MobileNetV5Encoder"/>, whole, once, before
    /// the TP ranks), and every tower module is judged under its tower scenarios' policy. Null: none.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor>? Processed { get; private init; }

    /// <summary>The audio tower's conformer blocks (audio_config.conf_num_hidden_layers) when the engine runs its own audio tower.</summary>
    public int TowerLayers { get; private init; }

    /// <summary>The vision tower's config when the engine runs its own vision tower (the processor gave pixel_values); null: none.</summary>
    public MobileNetV5Config? VisionTower { get; private init; }

    private bool HasAudio => Processed?.ContainsKey("input_features") == true;

    /// <summary>
    /// compare --audio FILE: the processor's ids and features are the prompt (<paramref name="files"/> names the file,
    /// <paramref name="tag"/> hashes it for the reference key).
    /// </summary>
    public Gemma3nScenario WithProcessed(IReadOnlyDictionary<string, Tensor> processed, string files, string tag)
    {
        var ids = processed["input_ids"].ToInt64Array();
        var kept = processed.Where(kv => kv.Key is "input_features" or "input_features_mask" or "pixel_values").ToDictionary(kv => kv.Key, kv => kv.Value);
        string configPath = Path.Combine(ModelPath ?? throw new InvalidOperationException("WithProcessed needs a checkpoint"), "config.json");
        return this with
        {
            Kind = Gemma3nInput.SoftTokens,
            Processed = kept,
            TowerLayers = kept.ContainsKey("input_features") ? Gemma3nAudioConfig.Load(configPath).ConfNumHiddenLayers : 0,
            VisionTower = kept.ContainsKey("pixel_values") ? MobileNetV5Config.Load(configPath) : null,
            PromptIds = ids,
            Input = "files",
            Id = BuildId("checkpoint", [Path.GetFileName((ModelPath ?? "").TrimEnd('/')), Layout, "files"], DType),
            ReferenceKey = $"{ReferenceKey}-files-{tag}-{string.Join('.', ids)}",
            Description = $"HF Gemma3n checkpoint {ModelPath}, TP={Tp}, the prompt from the checkpoint's processor with {files} (the engine's own towers), {DType.TorchName()}",
        };
    }

    /// <summary>The modules compared: the image soft-token path only where the prompt has an image (the catalog's soft-token prompt).</summary>
    /// With a processor's files: the engine's towers' modules, then the embedders' soft paths of the media the prompt has.
    public IReadOnlyList<string> Modules(Gemma3nConfig config)
    {
        if (Processed is null) return Gemma3nModules.ForModel(config, Kind);
        bool image = VisionTower is not null, audio = HasAudio;
        return
        [
            .. image ? MobileNetV5Encoder.Modules(VisionTower!) : [],
            .. audio ? Gemma3nAudioEncoder.Modules(TowerLayers) : [],
            .. Gemma3nModules.ForModel(config, Kind).Where(m => (image || m != "model.embed_vision.soft_embedding_norm") && (audio || m != "model.embed_audio.soft_embedding_norm")),
        ];
    }

    [SetsRequiredMembers]
    public Gemma3nScenario(int tp, Gemma3nInput input, DType dtype, string? fault = null, string? expectedFirstBadModule = null)
    {
        Tp = tp;
        Kind = input;
        string inputName = InputName(input);
        Id = BuildId("gemma3n", [$"tp{tp}", inputName], dtype, fault);
        Model = "gemma3n";
        Layout = $"tp{tp}";
        DType = dtype;
        Input = inputName;
        Fault = fault;
        ExpectedFirstBadModule = expectedFirstBadModule;
        Tolerance = Policy(dtype, tp).Name;
        ReferenceKey = $"gemma3n-{DTypeTag(dtype)}-{inputName}";
        Description = $"tiny Gemma3n (AltUp, Laurel, per-layer inputs, KV sharing, sparse MLPs, both embedders), TP={tp}, " +
                      $"{inputName} prompt, {dtype.TorchName()}" + (fault is null ? "" : $"; injected fault {fault}");
    }

    public static string InputName(Gemma3nInput input) => input switch
    {
        Gemma3nInput.Text => "text",
        Gemma3nInput.HardTokens => "hard-tokens",
        _ => "soft-tokens",
    };

    public static TolerancePolicy Policy(DType dtype, int tp) =>
        dtype == DType.Float32 ? Float32Policy : tp <= 1 ? Tolerances.BFloat16Layer : BFloat16TensorParallelPolicy(tp);

    /// <summary>
    /// float32 Gemma3n, elementwise: beyond GEMM blocking, the gaussian top-k cutoff (a mean and a std over each gate row),
    /// the AltUp RMS rescales and seven RMSNorms per layer (three of them re-normalising small sub-block outputs to unit
    /// RMS) carry float32 reduction-order noise forward. Measured on the tiny model: max abs 2.5e-5 on unit-scale logits
    /// (relative L2 3e-6) after 4 layers; 1e-4 gives 4x and still fails a 5e-4-sized mistake.
    /// </summary>
    public static readonly TolerancePolicy Float32Policy = new("float32-gemma3n", 1e-4, 1e-4,
        "float32 reduction-order noise through top-k statistics, AltUp rescales and 7 RMSNorms per layer: measured 2.5e-5 abs on unit-scale outputs, 4x margin");

    /// <summary>
    /// bfloat16 Gemma3n under TP, norm-wise: three row-parallel reductions per layer (o_proj, laurel.linear_right,
    /// down_proj; Llama has two), each rounding the partial sums to bf16 before the all-reduce, and the post-sub-block
    /// RMSNorms re-scale that noise to unit RMS before it joins the residual. Measured on the tiny model at TP=2:
    /// relative L2 up to 5e-2 with identical greedy tokens; 1e-1 allows 2x. Real bugs sit at O(1).
    /// </summary>
    public static TolerancePolicy BFloat16TensorParallelPolicy(int tp) =>
        new($"bfloat16-gemma3n-tp{tp}", 1.6e-2, 3.9e-3,
            $"bf16 Gemma3n under TP={tp}: ~one bf16 ulp per reduction, three reductions per layer, re-normalised by the sub-block RMSNorms")
        { MaxRelativeL2 = 1e-1 };

    /// <summary>A Gemma3n scenario on a user's checkpoint folder: text prompt of the given ids (or seeded ids).</summary>
    public static Gemma3nScenario ForCheckpoint(string modelPath, int tp, DType dtype, long[]? promptIds, int promptTokens)
    {
        var full = Path.GetFullPath(modelPath);
        var baseScenario = new Gemma3nScenario(tp, Gemma3nInput.Text, dtype);
        var ids = promptIds ?? SeededIds(promptTokens, Gemma3nConfig.Load(Path.Combine(full, "config.json")).Text.VocabSizePerLayerInput);
        return baseScenario with
        {
            ModelPath = full,
            PromptIds = ids,
            Id = BuildId("checkpoint", [Path.GetFileName(full.TrimEnd('/')), $"tp{tp}", $"input-ids-{ids.Length}"], dtype),
            ReferenceKey = $"checkpoint-{full}-{DTypeTag(dtype)}-{string.Join('.', ids)}",
            Description = $"HF Gemma3n checkpoint {full}, TP={tp}, {dtype.TorchName()}",
        };
    }

    private static long[] SeededIds(int count, int vocab)
    {
        var rng = new SplitMix64(99);
        return Enumerable.Range(0, count).Select(i => i == 0 ? 2L : 3 + (long)rng.NextInt(vocab - 3)).ToArray();
    }

    private string ModelDirectory(ScenarioContext context)
    {
        if (ModelPath is not null)
            return context.Client is null ? ModelPath : context.Client.ShareDirectory(ModelPath);
        return context.ModelDirectory(TinyGemma3n.ModelName, DType, (client, dir) =>
        {
            client.Invoke("gemma3n_build", new JsonObject
            {
                ["config"] = TinyGemma3n.Config(),
                ["seed"] = TinyGemma3n.Seed,
                ["dtype"] = DType.TorchName(),
                ["out_dir"] = client.WorkerPath(dir),
            });
            return dir;
        });
    }

    /// <summary>The prompt ids: the given ones, or the tiny model's prompt for this input kind.</summary>
    public long[] Ids => PromptIds ?? TinyGemma3n.Prompt(Kind);

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context)
    {
        var inputs = new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray(Ids, 1, Ids.Length) };
        if (Processed is not null)
            foreach (var (name, value) in Processed) inputs[name] = value;
        else if (Kind == Gemma3nInput.SoftTokens && ModelPath is null)
        {
            inputs["pixel_values"] = TinyGemma3n.VisionTowerOutput(DType);            // the stub tower's output [1, C, h, w]
            inputs["input_features"] = TinyGemma3n.AudioFeatures(DType);
            inputs["input_features_mask"] = Tensor.FromArray(Enumerable.Repeat(true, TinyGemma3n.AudioFrames).ToArray(), 1, TinyGemma3n.AudioFrames);
        }
        return inputs;
    }

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["model_seed"] = ModelPath is null ? TinyGemma3n.Seed.ToString(CultureInfo.InvariantCulture) : "n/a",
        ["prompt"] = string.Join(",", Ids),
        ["config"] = ModelPath is null ? TinyGemma3n.Config().ToJsonString() : $"from {ModelPath}",
        ["new_tokens"] = NewTokens.ToString(CultureInfo.InvariantCulture),
        ["top_k"] = TopK.ToString(CultureInfo.InvariantCulture),
    };

    private Gemma3nConfig LoadConfig(string dir) => Gemma3nConfig.Load(Path.Combine(dir, "config.json"));

    public override ReferenceBundle ComputeReference(ScenarioContext context)
    {
        var client = context.Client!;
        var dir = ModelDirectory(context);
        var config = LoadConfig(dir);
        var inputs = Inputs(context);
        var args = new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir),
            ["dtype"] = DType.TorchName(),
            ["capture"] = new JsonArray(Modules(config).Where(m => !Gemma3nModules.IsExtra(m)).Select(m => (JsonNode)m).ToArray()),
            ["max_new_tokens"] = NewTokens,
            ["top_k"] = TopK,
            ["model_class"] = config.IsMultimodal ? "Gemma3nForConditionalGeneration" : "Gemma3nForCausalLM",
            ["capture_steps"] = new JsonArray((JudgeSteps ? Gemma3nModules.StepModules(config) : []).Select(m => (JsonNode)m).ToArray()),
        };
        var reply = client.Invoke("gemma3n_run", args, inputs.Select(kv => (kv.Key, kv.Value)).Concat(ForcedTokensInput()).ToArray());
        var tensors = reply.Tensors.Where(kv => !TokenSequence.ReplyNames.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        // the greedy tokens with, under the oracle, the float64 model's logprobs teacher-forced on them (soft tokens in its prompt)
        return new ReferenceBundle(tensors, TokenSequence.FromReply(reply.Tensors), context.Versions());
    }

    /// <summary>The engine options this scenario's fault maps to (the embedder bug is a constructor argument).</summary>
    public Gemma3nOptions Options => FaultMap.Plan(Fault, "gemma3n").Gemma3n;


    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var dir = context.EngineDirectory(ModelDirectory(context));
        var config = LoadConfig(dir);
        // the catalog's soft tokens are the reference towers' outputs; with a processor's features the engine runs its own audio tower (below)
        var prompt = new Gemma3nPrompt(
            Tensor.FromArray(Ids, Ids.Length),
            Processed is null && reference.Tensors.TryGetValue("image_soft_tokens", out var image) ? image.Select(0, 0) : null,    // [n, C_vision]
            Processed is null && reference.Tensors.TryGetValue("audio_soft_tokens", out var audio) ? audio.Select(0, 0) : null);   // [m, C_audio]
        var modules = Modules(config);
        var capture = new ActivationCapture(modules);
        var sink = new CaptureSink(capture, context.ReportModule) { Tap = context.Tap };
        var stepModules = Gemma3nModules.StepModules(config);                      // every decode step, module by module
        var stepCapture = new ActivationCapture(DecodeSteps.Names(NewTokens, stepModules));
        var stepSink = JudgeSteps ? CaptureSink.DecodeSteps(stepCapture, NewTokens, context.ReportModule, context.Tap) : null;
        TokenSequence? engineTokens = null, engineForced = null;
        string? error = null, failedModule = null;
        // A fault Gemma3n has no option for (run --fault on another model's bug) changes nothing: faults are never ambient.
        {
            try
            {
                // the weights must be the tensors this config declares (a wrong width in config.json is named here)
                CheckpointValidator.Validate(dir, Gemma3nTensors.Expected(config));
                if (HasAudio) prompt = RunAudioTower(dir, prompt, sink);
                if (VisionTower is not null) prompt = RunVisionTower(dir, prompt, sink);
                var generations = ThreadWorld.Run(Tp, rank => RunRank(rank, dir, config, prompt, sink, stepSink, reference.Tokens), context.CollectiveTimeout);
                engineTokens = TokenSequence.FromTopK(generations[0].Free.Tokens, generations[0].Free.TopKIds, generations[0].Free.TopKLogprobs);
                engineForced = generations[0].Forced is { } f ? TokenSequence.FromTopK(f.Tokens, f.TopKIds, f.TopKLogprobs) : null;
            }
            catch (Exception e)
            {
                (failedModule, error) = EngineFailures.Settle(e, capture, modules);   // the same rows whichever rank failed first
            }
        }
        var policy = Policy(DType, Tp);
        // The bundle also holds the engine's inputs (soft tokens) and reference-only extras: compare the listed modules.
        var compared = LayerComparison.Select(reference.Tensors, modules);     // the modules, with their float64 oracle captures
        var towerPolicy = Gemma3nAudioTowerScenario.Policy(DType);
        var visionPolicy = Gemma3nVisionTowerScenario.Policy(DType);
        var layers = LayerComparison.Run(compared, capture, modules,
            m => m.StartsWith(Gemma3nAudioEncoder.DefaultPrefix, StringComparison.Ordinal) ? towerPolicy
                : m.StartsWith(MobileNetV5Encoder.DefaultPrefix, StringComparison.Ordinal) ? visionPolicy : policy);
        var tokens = engineTokens is null || reference.Tokens is null ? null
            : TokenComparison.ForScenario(reference.JudgedTokens!, engineTokens, DType, engineForced, fallbackTolerance: LogprobTolerance(DType, config));
        return new ScenarioResult(this, layers, tokens, error, failedModule, sw.Elapsed)
        {
            TokensExpected = true,
            ReferenceTokens = reference.Tokens,
            EngineTokens = engineTokens,
            EngineForcedTokens = engineForced,
            Steps = JudgeSteps && error is null ? DecodeSteps.Judge(reference.Tensors, stepCapture, NewTokens, stepModules, _ => policy) : null,
        };
    }

    /// <summary>
    /// The fallback where the reference has no oracle logprobs (`compare --no-oracle`, an old recording). float32: the
    /// default. bfloat16: four bf16 ulps of the largest logit the soft cap allows (logits live in (-c, c); at c = 7.5 one
    /// ulp is 2^-5, so 0.125), at least the bf16 fallback: the bf16 logits of the two sides differ by a few ulps where
    /// float32 sums straddle rounding boundaries, and log_softmax carries that into every logprob.
    /// </summary>
    public static double LogprobTolerance(DType dtype, Gemma3nConfig config)
    {
        if (dtype == DType.Float32) return TokenComparison.DefaultLogprobTolerance;
        double cap = config.Text.FinalLogitSoftcapping ?? 8.0;
        double ulp = Math.Pow(2, Math.Floor(Math.Log2(cap)) - 7);
        return Math.Max(TokenComparison.BFloat16LogprobTolerance, 4 * ulp);
    }

    /// <summary>
    /// The engine's own audio tower on the processor's features, once, whole, on the host (TP splits the decoder and the
    /// embedders, not the tower), recording its modules: its output [1, m, C_audio] and padding flags are the prompt's audio
    /// soft tokens (Gemma3nModel.get_audio_features: audio_tower(input_features, ~input_features_mask)).
    /// </summary>
    private Gemma3nPrompt RunAudioTower(string dir, Gemma3nPrompt prompt, IActivationSink sink)
    {
        using var checkpoint = Checkpoint.Open(dir);
        var tower = new Gemma3nAudioEncoder(new CheckpointWeights(checkpoint, DType), Gemma3nAudioConfig.Load(Path.Combine(dir, "config.json")), sink, Options);
        var features = Processed!["input_features"];
        var output = tower.Forward(features.To(DType), Flags(Processed["input_features_mask"]));
        int m = output.Encodings.Size(1);
        return prompt with { AudioSoftTokens = output.Encodings.Select(0, 0).Clone(), AudioPadding = output.Padding.Take(m).ToArray() };
    }

    /// <summary>
    /// The engine's own vision tower on the processor's pixel_values, once, whole, on the host, recording its modules: its
    /// output through get_image_features' reshape and sqrt(C) scale is the prompt's image soft tokens [n, C_vision].
    /// </summary>
    private Gemma3nPrompt RunVisionTower(string dir, Gemma3nPrompt prompt, IActivationSink sink)
    {
        using var checkpoint = Checkpoint.Open(dir);
        var tower = new MobileNetV5Encoder(new CheckpointWeights(checkpoint), VisionTower!, sink, Options);
        var output = tower.Forward(Processed!["pixel_values"]);                           // [B, 2048, R, R]
        var config = LoadConfig(dir);
        return prompt with { ImageSoftTokens = MobileNetV5Encoder.ImageSoftTokens(output, config.VisionSoftTokensPerImage!.Value).To(DType).Clone() };
    }

    /// <summary>A frame mask's values (bool, or integers with 1 = valid) as flags.</summary>
    internal static bool[] Flags(Tensor mask) =>
        mask.DType == DType.Bool ? mask.ToHost().Contiguous().Span<bool>().ToArray() : mask.ToInt64Array().Select(v => v != 0).ToArray();

    private (Generation Free, Generation? Forced) RunRank(int rank, string dir, Gemma3nConfig config, Gemma3nPrompt prompt, IActivationSink sink,
        IActivationSink? stepSink, TokenSequence? reference)
    {
        var ctx = ThreadWorld.Layout(rank, Tp, 1);
        using var checkpoint = Checkpoint.Open(dir);
        IWeightSource weights = new CheckpointWeights(checkpoint, DType);
        using var gpu = CudaScenarios.OnGpu(Device, ref ctx, ref weights, ref sink);     // --device cuda: this rank on the GPU
        if (Device == "cuda" && stepSink is not null) stepSink = new HostCopySink(stepSink);
        prompt = prompt with
        {
            ImageSoftTokens = CudaScenarios.Input(Device, prompt.ImageSoftTokens),
            AudioSoftTokens = CudaScenarios.Input(Device, prompt.AudioSoftTokens),
        };
        var prefill = new PrefillSink(sink);                                       // one model: the captured forward, then decoding
        var model = new Gemma3nModel(weights, config, ctx, prefill, Options);
        model.Forward(prompt);
        prefill.Enabled = false;
        var free = model.Generate(prompt, NewTokens, TopK);
        // teacher-forced on the reference's tokens (the one decode loop's forced option), every decoder module recorded at
        // every decode step; the token verdict reads it after a divergence, so the steps after a near tie are compared too
        prefill.Steps = stepSink;
        var forced = reference is { Length: > 1 } && (stepSink is not null || TokenComparison.ForcedTokensFor(reference, free.Tokens) is not null)
            ? model.Generate(prompt, NewTokens, TopK, reference.Tokens) : null;
        return (free, TokenComparison.ForcedTokensFor(reference, free.Tokens) is null ? null : forced);
    }
}

/// <summary>The HF module paths a Gemma3n scenario compares, in forward order (plus the reference's named extras).</summary>
public static class Gemma3nModules
{
    /// <summary>Tensors the reference returns under a name of its own (pre-hooks, the soft-capped logits), not module hooks.</summary>
    public static bool IsExtra(string name) => name is "logits" || name.EndsWith(".inputs_embeds", StringComparison.Ordinal);

    /// <summary>The modules judged at every decode step: the text decoder's (the embedders and the merge run at the prefill only).</summary>
    public static IReadOnlyList<string> StepModules(Gemma3nConfig config) =>
        [.. ForModel(config, Gemma3nInput.Text).Where(m => !IsExtra(m) && !m.StartsWith("model.embed_vision", StringComparison.Ordinal)
            && !m.StartsWith("model.embed_audio", StringComparison.Ordinal))];

    public static IReadOnlyList<string> ForModel(Gemma3nConfig config, Gemma3nInput input)
    {
        string p = config.TextPrefix;
        var list = new List<string> { p + ".embed_tokens" };
        if (config.IsMultimodal)
        {
            foreach (var e in new[] { "model.embed_vision", "model.embed_audio" })
                list.AddRange([e + ".hard_embedding_norm", e + ".embedding_projection", e + ".embedding_post_projection_norm", e]);
            if (input == Gemma3nInput.SoftTokens)
                list.AddRange(["model.embed_vision.soft_embedding_norm", "model.embed_audio.soft_embedding_norm"]);
            list.Add(p + ".inputs_embeds");
        }
        list.AddRange([p + ".embed_tokens_per_layer", p + ".per_layer_model_projection", p + ".per_layer_projection_norm"]);
        for (int i = 0; i < config.Text.NumLayers; i++)
        {
            string l = $"{p}.layers.{i}";
            list.AddRange([l + ".input_layernorm", l + ".laurel", l + ".self_attn", l + ".post_attention_layernorm", l + ".mlp",
                l + ".post_feedforward_layernorm"]);
            list.AddRange([l + ".per_layer_input_gate", l + ".post_per_layer_input_norm", l]);
        }
        list.AddRange([p + ".norm", "lm_head", "logits"]);
        return list;
    }
}

/// <summary>The catalog's Gemma3n entries (one line in <see cref="ScenarioCatalog"/> adds them).</summary>
public static class Gemma3nScenarios
{
    public const string EmbedderProjection = "model.embed_vision.embedding_projection";

    public static IEnumerable<Scenario> All()
    {
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
            foreach (var tp in new[] { 1, 2 })
                foreach (var input in new[] { Gemma3nInput.Text, Gemma3nInput.HardTokens, Gemma3nInput.SoftTokens })
                    yield return new Gemma3nScenario(tp, input, dtype);
        // vLLM's Gemma-3n TP=2 bug: the embedder's RowParallelLinear built with input_is_parallel=True dies on its
        // full-width input, first at embed_vision's projection (its hard-token pass runs first, as in HF).
        yield return new Gemma3nScenario(2, Gemma3nInput.SoftTokens, DType.Float32, Faults.RowParallelInputIsParallel, EmbedderProjection);
        // The sparse MLP's top-k statistics over one rank's gate shard: invisible at TP=1, caught at the first sparse MLP at TP=2.
        yield return new Gemma3nScenario(2, Gemma3nInput.Text, DType.Float32, Faults.SparseTopKRankLocal, "model.language_model.layers.0.mlp");
    }
}
