using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// The engine's Gemma4 text decoder against HF's Gemma4ForCausalLM on the same tiny random weights
/// (<see cref="TinyGemma4"/>), at TP=1 or TP=2 (ranks as threads): HF runs the prompt with hooks on every compared
/// module (worker op gemma4_forward) and greedy-decodes; the engine records the same modules and decodes. Then layer by
/// layer and token by token. Faults reach the model as <see cref="Gemma4Options"/>:
/// <list type="bullet">
/// <item><c>gelu-tanh-as-exact</c>: the experts built with exact GELU (vLLM's FusedMoE activation="gelu"), the dense MLP
/// untouched. Caught in float32 at the first MoE layer's experts; below bf16's resolution.</item>
/// <item><c>gate-up-swapped</c>: the fused gate_up_proj read with its halves swapped; bf16 catches it at the experts.</item>
/// </list>
/// </summary>
public sealed record Gemma4Scenario : Scenario
{
    /// <summary>The greedy tokens decoded by default (compare --max-new-tokens sets <see cref="NewTokens"/>).</summary>
    public const int DefaultNewTokens = 4;

    /// <inheritdoc/>
    public override int NewTokens { get; init; } = DefaultNewTokens;

    public const int TopK = 5, PromptTokens = 6;
    public const ulong PromptSeed = 314;

    public string Shape { get; }
    public int Tp { get; }

    /// <summary>An HF checkpoint folder to compare on instead of a tiny model (`harness compare --model DIR`).</summary>
    public string? ModelPath { get; init; }

    /// <summary>Explicit prompt ids (overrides the seeded prompt).</summary>
    public long[]? PromptIds { get; init; }

    [SetsRequiredMembers]
    public Gemma4Scenario(string shape, int tp, DType dtype, string? fault = null, string? expectedFirstBadModule = null)
    {
        Shape = shape;
        Tp = tp;
        Id = BuildId("gemma4", [shape, $"tp{tp}", "text"], dtype, fault);
        Model = "gemma4";
        Layout = $"tp{tp}";
        DType = dtype;
        Input = "text";
        Fault = fault;
        ExpectedFirstBadModule = expectedFirstBadModule;
        Tolerance = Policy(dtype, tp).Name;
        ReferenceKey = $"gemma4-{shape}-{DTypeTag(dtype)}-text";
        Description = $"tiny Gemma4 ({shape}) text decoder, TP={tp}, {PromptTokens} prompt tokens, {dtype.TorchName()}" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    /// <summary>
    /// bf16 near-tie margin: logits are bf16 values below the softcap (20.5, 25.5), where one bf16 ulp is 2^-3 = 0.125 in
    /// [16, 32) and 0.0625 in [8, 16); two logits one ulp apart swap when TP rounds each rank's partial sum (measured:
    /// e2b-like at TP=2, step 2, the reference's top-2 exactly 0.0625 apart). A real bug moves logits by far more.
    /// </summary>
    public const double Bf16LogitUlp = 0.125;

    /// <summary>
    /// float32 on a user's checkpoint, judged norm-wise: a checkpoint's residual stream has an unknown scale (tens to
    /// hundreds in real models; ~15 in the perturbed tiny multimodal one), where float32-gemm's atol (set for unit-scale
    /// tensors) flags single cancelled elements: measured relative L2 8e-7 with one element of 384 at 3.7e-5 on the tiny
    /// Gemma4ForConditionalGeneration at TP=2. 1e-5 is ~100 float32 ulps RMS; layout and wiring bugs sit at 1e-2 and above.
    /// </summary>
    public static readonly TolerancePolicy CheckpointFloat32 = new("float32-checkpoint", 1e-5, 1e-5,
        "float32 on a checkpoint of unknown residual scale: relative L2 <= 1e-5 (~100 float32 ulps RMS)") { MaxRelativeL2 = 1e-5 };

    private TolerancePolicy Judge => ModelPath is not null && DType == DType.Float32 ? CheckpointFloat32 : Policy(DType, Tp);

    public static TolerancePolicy Policy(DType dtype, int tp) =>
        dtype == DType.Float32 ? Tolerances.Float32Gemm : Tolerances.BFloat16TensorParallel(tp);

    /// <summary>A Gemma4 scenario on a user's checkpoint folder (gemma4 or gemma4_text).</summary>
    public static Gemma4Scenario ForCheckpoint(string modelPath, int tp, DType dtype, long[]? promptIds, int promptTokens)
    {
        var full = Path.GetFullPath(modelPath);
        var s = new Gemma4Scenario("checkpoint", tp, dtype);
        return s with
        {
            ModelPath = full,
            PromptIds = promptIds ?? SeededPrompt(Gemma4ForCausalLM.LoadConfig(full).VocabSize, promptTokens),
            Id = BuildId("checkpoint", [Path.GetFileName(full.TrimEnd('/')), $"tp{tp}", $"input-ids-{promptIds?.Length ?? promptTokens}"], dtype),
            ReferenceKey = $"checkpoint-{full}-{DTypeTag(dtype)}-{string.Join('.', promptIds ?? [])}-{promptTokens}",
            Description = $"HF Gemma4 checkpoint {full}, TP={tp}, {dtype.TorchName()}",
            Tolerance = dtype == DType.Float32 ? CheckpointFloat32.Name : Policy(dtype, tp).Name,
        };
    }

    private string ModelDirectory(ScenarioContext context)
    {
        if (ModelPath is not null)
            return context.Client is null ? ModelPath : context.Client.ShareDirectory(ModelPath);
        return context.ModelDirectory(TinyGemma4.ModelName(Shape), DType, (client, dir) =>
        {
            client.Invoke("gemma4_build", new JsonObject
            {
                ["config"] = TinyGemma4.Config(Shape), ["seed"] = TinyGemma4.Seed, ["dtype"] = DType.TorchName(),
                ["out_dir"] = client.WorkerPath(dir), ["model_class"] = "Gemma4ForCausalLM", ["oracle"] = false,
            });
            return dir;
        });
    }

    private static long[] SeededPrompt(int vocab, int tokens)
    {
        var rng = new SplitMix64(PromptSeed);
        return Enumerable.Range(0, tokens).Select(_ => (long)(6 + rng.NextInt(vocab - 6))).ToArray();
    }

    public Tensor Prompt(Gemma4TextConfig config)
    {
        var ids = PromptIds ?? SeededPrompt(config.VocabSize, PromptTokens);
        return Tensor.FromArray(ids, ids.Length);
    }

    private static string Prefix(string dir) =>
        File.Exists(Path.Combine(dir, "config.json")) && Engine.Config.HfConfig.Load(Path.Combine(dir, "config.json")).Has("text_config")
            ? "model.language_model." : "model.";

    public IReadOnlyList<string> ModulesFor(Gemma4TextConfig config, string prefix) => [.. TinyGemma4.Modules(config, prefix), "logits"];

    public override IReadOnlyDictionary<string, Tensor> Inputs(ScenarioContext context)
    {
        var dir = ModelDirectory(context);
        return new Dictionary<string, Tensor> { ["input_ids"] = Prompt(Gemma4ForCausalLM.LoadConfig(dir)) };
    }

    public override IReadOnlyDictionary<string, string> Manifest() => new Dictionary<string, string>
    {
        ["model_seed"] = ModelPath is null ? TinyGemma4.Seed.ToString(CultureInfo.InvariantCulture) : "n/a",
        ["prompt_seed"] = PromptSeed.ToString(CultureInfo.InvariantCulture),
        ["config"] = ModelPath is null ? TinyGemma4.Config(Shape).ToJsonString() : $"from {ModelPath}",
        ["new_tokens"] = NewTokens.ToString(CultureInfo.InvariantCulture),
        ["top_k"] = TopK.ToString(CultureInfo.InvariantCulture),
        ["attn_implementation"] = "eager",
    };

    public override ReferenceBundle ComputeReference(ScenarioContext context)
    {
        var client = context.Client!;
        var dir = ModelDirectory(context);
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        var prompt = Prompt(config).Unsqueeze(0);                                  // [1, T]
        var modules = TinyGemma4.Modules(config, Prefix(dir));
        var reply = client.Invoke("gemma4_forward", new JsonObject
        {
            ["model_dir"] = client.WorkerPath(dir), ["dtype"] = DType.TorchName(),
            ["capture"] = new JsonArray(modules.Select(m => (JsonNode)JsonValue.Create(m)).ToArray()),
        }, ("input_ids", prompt));
        var gen = client.Generate(dir, DType, prompt, NewTokens, TopK, JudgeSteps ? modules : null, ForcedTokens);   // every module at every decode step too
        var tensors = new Dictionary<string, Tensor>(reply.Tensors);
        foreach (var (name, t) in gen.StepCaptures) tensors[name] = t;
        return new ReferenceBundle(tensors, TokenSequence.FromTopK(gen.Tokens, gen.TopKIds, gen.TopKLogprobs, gen.OracleTopKLogprobs),
            context.Versions());
    }

    public override ScenarioResult RunEngine(ScenarioContext context, ReferenceBundle reference)
    {
        var sw = Stopwatch.StartNew();
        var dir = context.EngineDirectory(ModelDirectory(context));
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        var input = Prompt(config);
        var modules = ModulesFor(config, Prefix(dir));
        var capture = new ActivationCapture(modules);
        var sink = new CaptureSink(capture, context.ReportModule) { Tap = context.Tap };
        var stepModules = TinyGemma4.Modules(config, Prefix(dir));                  // every decode step, module by module
        var stepCapture = new ActivationCapture(DecodeSteps.Names(NewTokens, stepModules));
        var stepSink = JudgeSteps ? CaptureSink.DecodeSteps(stepCapture, NewTokens, context.ReportModule, context.Tap) : null;
        TokenSequence? engineTokens = null, engineForced = null;
        string? error = null, failedModule = null;
        try
        {
            // the weights must be the tensors this config declares (a wrong width in config.json is named here)
            CheckpointValidator.Validate(dir, Gemma4Tensors.Expected(config));
            var options = FaultMap.Plan(Fault, "gemma4").Gemma4;    // a fault with no site in Gemma4 changes nothing
            var generations = ThreadWorld.Run(Tp, rank => RunRank(rank, dir, config, input, sink, stepSink, options, reference.Tokens), context.CollectiveTimeout);
            engineTokens = TokenSequence.FromTopK(generations[0].Free.Tokens, generations[0].Free.TopKIds, generations[0].Free.TopKLogprobs);
            engineForced = generations[0].Forced is { } f ? TokenSequence.FromTopK(f.Tokens, f.TopKIds, f.TopKLogprobs) : null;
        }
        catch (Exception e)
        {
            (failedModule, error) = EngineFailures.Settle(e, capture, modules);   // the same rows whichever rank failed first
        }
        var policy = Judge;
        var layers = LayerComparison.Run(LayerComparison.Select(reference.Tensors, modules), capture, modules, _ => policy);  // with the float64 oracle's captures
        var tokens = engineTokens is null || reference.Tokens is null ? null : TokenComparison.ForScenario(reference.JudgedTokens!, engineTokens, DType,
            engineForced, margin: DType == DType.Float32 ? TokenComparison.DefaultMargin : Bf16LogitUlp);
        return new ScenarioResult(this, layers, tokens, error, failedModule, sw.Elapsed)
        {
            TokensExpected = true,
            ReferenceTokens = reference.Tokens,
            EngineTokens = engineTokens,
            EngineForcedTokens = engineForced,
            Steps = JudgeSteps && error is null ? DecodeSteps.Judge(reference.Tensors, stepCapture, NewTokens, stepModules, _ => policy) : null,
        };
    }

    private (Generation Free, Generation? Forced) RunRank(int rank, string dir, Gemma4TextConfig config, Tensor input, IActivationSink sink,
        IActivationSink? stepSink, Gemma4Options options, TokenSequence? reference)
    {
        var ctx = ThreadWorld.Layout(rank, Tp, 1);
        using var checkpoint = Checkpoint.Open(dir);
        IWeightSource weights = new CheckpointWeights(checkpoint, DType);
        using var gpu = CudaScenarios.OnGpu(Device, ref ctx, ref weights, ref sink);     // --device cuda: this rank on the GPU
        if (Device == "cuda" && stepSink is not null) stepSink = new HostCopySink(stepSink);
        int positions = Math.Max(256, input.Shape[0] + NewTokens);
        var prefill = new PrefillSink(sink);                                       // one model: the captured prefill, then decoding
        var model = new Gemma4ForCausalLM(weights, config, ctx, prefill, options, maxPositions: positions);
        var logits = model.Forward(model.NewSequence(), input);                       // the captured prefill
        if (prefill.Wants("logits")) prefill.Record("logits", ctx.WorldRank, logits.Unsqueeze(0), Harness.Engine.Capture.ShardSpec.Whole);
        prefill.Enabled = false;
        var free = model.Generate(input, NewTokens, TopK);
        // teacher-forced on the reference's tokens (the one decode loop's forced option), every module recorded at every
        // decode step; the token verdict reads it after a divergence (without one it repeats the free run step for step)
        prefill.Steps = stepSink;
        var forced = reference is { Length: > 1 } && (stepSink is not null || TokenComparison.ForcedTokensFor(reference, free.Tokens) is not null)
            ? model.Generate(input, NewTokens, TopK, reference.Tokens) : null;
        return (free, TokenComparison.ForcedTokensFor(reference, free.Tokens) is null ? null : forced);
    }
}
