using System.Diagnostics.CodeAnalysis;
using System.Diagnostics;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Llama;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>How the prompt reaches the model: token ids through model.embed_tokens, or prompt embeddings directly.</summary>
public enum InputKind { InputIds, PromptEmbeds }

/// <summary>
/// The engine's Llama against HF's on the same weights (the tiny random Llama of <see cref="TinyLlama"/>) in a parallel
/// layout (TP x PP, SP on or off): HF runs the prompt with hooks on every compared module and greedy-decodes; the
/// engine loads the same safetensors on every rank (ranks as threads), records the same modules (shards and token
/// slices as they are) and decodes. Then layer by layer (the first divergent module named) and token by token.
/// </summary>
public sealed record LlamaScenario : Scenario
{
    /// <summary>The greedy tokens decoded by default (compare --max-new-tokens sets <see cref="NewTokens"/>).</summary>
    public const int DefaultNewTokens = 8;

    /// <inheritdoc/>
    public override int NewTokens { get; init; } = DefaultNewTokens;

    public const int TopK = 5;

    public int Tp { get; }
    public int Pp { get; }
    public bool Sp { get; }
    public InputKind InputKind { get; }
    public int PromptTokens { get; }

    /// <summary>An HF checkpoint folder to compare on instead of the tiny random Llama (`harness compare --model DIR`).</summary>
    public string? ModelPath { get; init; }

    /// <summary>Explicit prompt token ids (overrides the seeded prompt when set).</summary>
    public long[]? PromptIds { get; init; }

    /// <summary>The tiny model's variant (<see cref="TinyLlama.Variants"/>).</summary>
    public string Variant { get; }


    [SetsRequiredMembers]
    public LlamaScenario(int tp, int pp, bool sp, InputKind input, DType dtype = DType.Float32, int promptTokens = 7, string? fault = null,
        string? expectedFirstBadModule = null, string variant = "default")
    {
        Tp = tp; Pp = pp; Sp = sp; InputKind = input; PromptTokens = promptTokens; Variant = variant;
        string layout = $"tp{tp}{(sp ? "-sp" : "")}{(pp > 1 ? $"-pp{pp}" : "")}";
        string inputName = input == InputKind.InputIds ? "input-ids" : "prompt-embeds";
        string model = variant == "default" ? "llama" : $"llama-{variant}";
        Id = BuildId(model, [layout, $"{inputName}{(promptTokens == 7 ? "" : $"-{promptTokens}")}"], dtype, fault);
        Model = "llama";
        Layout = layout;
        DType = dtype;
        Input = inputName;
        Fault = fault;
        ExpectedFirstBadModule = expectedFirstBadModule;
        Tolerance = Policy(dtype, tp).Name;
        ReferenceKey = $"{model}-{DTypeTag(dtype)}-{inputName}-{promptTokens}";
        Description = $"tiny Llama{(variant == "default" ? "" : $" ({variant})")}, TP={tp}{(sp ? " with sequence parallelism" : "")}, PP={pp}, {promptTokens} prompt tokens as {inputName}, {dtype.TorchName()}" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    public int WorldSize => Tp * Pp;

    /// <summary>How this scenario's fault is planted in Llama (<see cref="FaultMap"/>): constructor options or a config edit.</summary>
    private FaultPlan Plan => FaultMap.Plan(Fault, "llama");

    public static TolerancePolicy Policy(DType dtype, int tp = 1) =>
        dtype == DType.Float32 ? Tolerances.Float32Gemm : Tolerances.BFloat16TensorParallel(tp);

    /// <summary>
    /// A Llama scenario on a user's HF checkpoint folder (config.json + safetensors): the same layer-by-layer and
    /// token-by-token comparison on real weights. The reference must see the folder (ReferenceClient.ShareDirectory).
    /// </summary>
    /// <remarks>
    /// <paramref name="input"/> <see cref="InputKind.PromptEmbeds"/> (`compare --prompt-embeds`): both sides get the prompt
    /// ids' rows of the checkpoint's own model.embed_tokens.weight as inputs_embeds [1, T, hidden], what HF's
    /// get_input_embeddings()(ids) gives, so the decoder runs from prompt embeds at real widths (seed bug 4: SP and SP+PP
    /// need a rank-aware residual slice and an all-gather across stages there).
    /// </remarks>
    public static LlamaScenario ForCheckpoint(string modelPath, int tp, int pp, bool sp, DType dtype, long[]? promptIds, int promptTokens,
        InputKind input = InputKind.InputIds)
    {
        var full = Path.GetFullPath(modelPath);
        var config = HfConfig.Load(Path.Combine(full, "config.json"));
        var baseScenario = new LlamaScenario(tp, pp, sp, input, dtype, promptIds?.Length ?? promptTokens);
        return baseScenario with
        {
            ModelPath = full,
            PromptIds = promptIds,
            Model = config.ModelType ?? "llama",
            Id = BuildId("checkpoint", [Path.GetFileName(full.TrimEnd('/')), baseScenario.Layout, $"{baseScenario.Input}-{promptIds?.Length ?? promptTokens}"], dtype),
            ReferenceKey = $"checkpoint-{full}-{DTypeTag(dtype)}-{baseScenario.Input}-{string.Join('.', promptIds ?? [])}-{promptTokens}",
            Description = $"HF checkpoint {full}, TP={tp}{(sp ? " with SP" : "")}, PP={pp}, {dtype.TorchName()}" +
                          (input == InputKind.PromptEmbeds ? ", the prompt as inputs_embeds (the ids' rows of model.embed_tokens.weight)" : ""),
        };
    }

    /// <summary>
    /// A user's checkpoint (compare --model) or a recorded model (offline): config.json and the weights are checked
    /// against what <see cref="LlamaForCausalLM"/> will load, and the layout against the config, before the reference
    /// runs. (A live tiny model is built by the reference itself.)
    /// </summary>
    public override void CheckInputs(ScenarioContext context)
    {
        var dir = ModelPath ?? (context.IsLive ? null : ModelDirectory(context));
        if (dir is null) return;
        var config = ModelFolder.Check(dir, Tp, Pp, PromptIds);
        // the request fits the model's positions and the machine's memory, before any reference work (issue 24); on a GPU the
        // device's memory is compare's check (CompareCommand.Execute), with the same prediction
        ModelFolder.CheckPromptFits(Path.Combine(Path.GetFullPath(dir), "config.json"), config.Text, PromptIds?.Length ?? PromptTokens, NewTokens, DType,
            oracle: context.IsLive && context.Oracle, availableBytes: Device == "cuda" ? long.MaxValue : null, steps: JudgeSteps,
            oracleWhole: context.OracleMode == "whole");
    }

    private TextConfig LoadConfig(string dir) => HfConfig.Load(Path.Combine(dir, "config.json")).Text;

    private string ModelDirectory(ScenarioContext context)
    {
        if (ModelPath is not null)
            return context.Client is null ? ModelPath : context.Client.ShareDirectory(ModelPath);
        return context.ModelDirectory(TinyLlama.ModelName(Variant), DType, (client, dir) =>
        {
            client.BuildModel(TinyLlama.Config(Variant), TinyLlama.Seed, DType, dir);
            return dir;
        });
    }

    /// <summary>The prompt: the given ids, seeded token ids [T] in [3, vocab), or seeded unit-normal embeddings [T, hidden].</summary>
    /// On a checkpoint with prompt embeds: the ids' rows of its model.embed_tokens.weight [T, hidden] at the scenario's dtype.</summary>
    public Tensor Prompt(TextConfig? config = null)
    {
        if (InputKind == InputKind.PromptEmbeds && ModelPath is not null) return EmbeddingRows(ModelPath, PromptTokenIds(config), DType);
        if (PromptIds is not null) return Tensor.FromArray(PromptIds, PromptIds.Length);
        int hidden = config?.HiddenSize ?? TinyLlama.Hidden;
        if (InputKind == InputKind.PromptEmbeds) return Tensor.Normal(DType, 77, 0, 1, PromptTokens, hidden);
        return Tensor.FromArray(PromptTokenIds(config), PromptTokens);
    }

    /// <summary>The given ids, or seeded token ids in [3, vocab).</summary>
    private long[] PromptTokenIds(TextConfig? config)
    {
        if (PromptIds is not null) return PromptIds;
        int vocab = config?.VocabSize ?? 200;
        var rng = new SplitMix64(99);
        return Enumerable.Range(0, PromptTokens).Select(_ => (long)(3 + rng.NextInt(vocab - 3))).ToArray();
    }

    /// <summary>
    /// HF's <c>inputs_embeds = self.embed_tokens(input_ids)</c> (LlamaModel.forward) from the checkpoint itself: the ids' rows
    /// of model.embed_tokens.weight, each read alone (a real table is 0.5-2 GB), at <paramref name="dtype"/> as HF loads it. [T, hidden]
    /// </summary>
    public static Tensor EmbeddingRows(string dir, IReadOnlyList<long> ids, DType dtype)
    {
        using var checkpoint = Checkpoint.Open(dir);
        var weights = new CheckpointWeights(checkpoint, dtype);
        return Tensor.Cat(ids.Select(id => weights.GetRows("model.embed_tokens.weight", checked((int)id), 1)).ToList());   // copies: outlives the mapping
    }

    /// <summary>The compared HF module paths, in forward order, for a model of the given depth.</summary>
    public IReadOnlyList<string> ModulesFor(TextConfig? config) =>
        TinyLlama.Modules(InputKind == InputKind.InputIds, config?.NumHiddenLayers ?? 4);

    public IReadOnlyList<string> Modules => ModulesFor(null);

    /// <summary>The modules judged at every decode step: the decoder's, embed_tokens included (a decode step feeds the
    /// generated token's id even after prompt embeddings).</summary>
    public static IReadOnlyList<string> StepModulesFor(TextConfig? config) => TinyLlama.Modules(true, config?.NumHiddenLayers ?? 4);

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context) =>
        new Dictionary<string, Tensor> { [InputKind == InputKind.InputIds ? "input_ids" : "inputs_embeds"] = Prompt(LoadConfig(ModelDirectory(context))) };

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["model_seed"] = ModelPath is null ? TinyLlama.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture) : "n/a",
        ["prompt_seed"] = InputKind == InputKind.InputIds ? "99" : "77",
        ["config"] = ModelPath is null ? TinyLlama.Config(Variant).ToJsonString() : $"from {ModelPath}",
        ["new_tokens"] = NewTokens.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["top_k"] = TopK.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    public override ReferenceBundle ComputeReference(ScenarioContext context)
    {
        var client = context.Client!;
        var dir = ModelDirectory(context);
        var config = LoadConfig(dir);
        var batched = Prompt(config).Unsqueeze(0);                             // [1, T] or [1, T, hidden]
        var forward = client.Forward(dir, DType, batched, ModulesFor(config));
        var gen = client.Generate(dir, DType, batched, NewTokens, TopK, JudgeSteps ? StepModulesFor(config) : null, ForcedTokens);
        var tensors = new Dictionary<string, Tensor>(forward.Captured);
        foreach (var (name, t) in gen.StepCaptures) tensors[name] = t;          // step<s>.<module> and their float64 oracle
        return new ReferenceBundle(tensors, TokenSequence.FromTopK(gen.Tokens, gen.TopKIds, gen.TopKLogprobs, gen.OracleTopKLogprobs),
            context.Versions());
    }

    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var dir = ModelDirectory(context);
        var trueConfig = LoadConfig(dir);
        var input = Prompt(trueConfig);
        var modules = ModulesFor(trueConfig);
        var capture = new ActivationCapture(modules);
        TextConfig config;
        string engineDir;
        using var copies = new ModelFolderCopies();
        try
        {
            engineDir = context.EngineDirectory(dir);                         // the engine's config and weights
            if (Plan.ConfigEdit is { } edit)                                  // a config fault: a field the loader did not read
                engineDir = copies.Edited(engineDir, edit);
            config = LoadConfig(engineDir);
            // the weights must be the tensors this config declares (a wrong width or vocab in config.json is named here)
            CheckpointValidator.Validate(engineDir, LlamaForCausalLM.ExpectedTensors(HfConfig.Load(Path.Combine(engineDir, "config.json"))));
        }
        catch (Exception e) when (e is ConfigException or CheckpointMismatchException)
        {
            return new ScenarioResult(this, LayerComparison.Run(LayerComparison.Select(reference.Tensors, modules), capture, modules, _ => Policy(DType, Tp)), null,
                e.Message, null, sw.Elapsed) { TokensExpected = true, ReferenceTokens = reference.Tokens };
        }
        var sink = new CaptureSink(capture, context.ReportModule) { Tap = context.Tap };
        var stepModules = StepModulesFor(trueConfig);
        var stepCapture = new ActivationCapture(DecodeSteps.Names(NewTokens, stepModules));
        var stepSink = JudgeSteps ? CaptureSink.DecodeSteps(stepCapture, NewTokens, context.ReportModule, context.Tap) : null;
        TokenSequence? engineTokens = null, engineForced = null;
        string? error = null, failedModule = null;
        var options = Plan.Llama;                                             // SP/PP residual faults: constructor inputs
        {
            try
            {
                var forcedOn = reference.Tokens is { Length: > 1 } rt ? rt.Tokens : null;
                var generations = ThreadWorld.Run(WorldSize, rank => RunRank(rank, engineDir, config, input, sink, stepSink, options, forcedOn), context.CollectiveTimeout);
                engineTokens = TokenSequence.FromTopK(generations[0].Generation.Tokens, generations[0].Generation.TopKIds, generations[0].Generation.TopKLogprobs);
                engineForced = generations[0].Forced is { } f ? TokenSequence.FromTopK(f.Tokens, f.TopKIds, f.TopKLogprobs) : null;
            }
            catch (Exception e)
            {
                (failedModule, error) = EngineFailures.Settle(e, capture, modules);   // the same rows whichever rank failed first
            }
        }
        var policy = Policy(DType, Tp);
        var layers = LayerComparison.Run(LayerComparison.Select(reference.Tensors, modules), capture, modules, _ => policy);
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

    private (Generation Generation, Generation? Forced) RunRank(int rank, string dir, TextConfig config, Tensor input,
        IActivationSink sink, IActivationSink? stepSink, LlamaOptions options, long[]? forcedOn)
    {
        var ctx = ThreadWorld.Layout(rank, Tp, Pp, Sp);
        using var checkpoint = Checkpoint.Open(dir);
        IWeightSource weights = new CheckpointWeights(checkpoint, DType);          // computed in the scenario's dtype, as HF loads it
        using var gpu = Device == "cuda" ? CudaScenarios.RankOnGpu(ref ctx, ref weights, ref sink) : null;
        if (Device == "cuda" && stepSink is not null) stepSink = new HostCopySink(stepSink);
        int tokens = input.Shape[0];
        var prefill = new PrefillSink(sink);                                       // one model: the captured forward, then decoding
        var model = new LlamaForCausalLM(weights, config, ctx, prefill, options: options);
        model.Forward(ctx.IsFirstStage ? input : null, tokens);
        prefill.Enabled = false;
        var generation = model.Generate(input, NewTokens, TopK);
        // teacher-forced on the reference's tokens (the one decode loop's forced option): the steps after a near tie, and
        // every module at every decode step (the step sink records steps 1.., the prefill is the capture above)
        prefill.Steps = stepSink;
        return (generation, forcedOn is null ? null : model.Generate(input, NewTokens, TopK, forcedOn));
    }
}
