using System.Text.Json.Nodes;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Models.Llama;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.Ops;
using Harness.Engine.Runtime;

namespace Harness.Engine.Models;

/// <summary>
/// How a model is built with a fault planted: the constructor options of each family's models, the matmul options of
/// the ops, and for a config fault the edit to config.json as the engine reads it (a field a loader did not read). The
/// default plants nothing. A plan is handed to a constructor as an explicit input (faults are never ambient).
/// </summary>
public sealed record FaultPlan
{
    public static FaultPlan None { get; } = new();

    public LlamaOptions Llama { get; init; } = LlamaOptions.None;
    public Gemma3nOptions Gemma3n { get; init; } = Gemma3nOptions.Default;
    public Gemma4Options Gemma4 { get; init; } = Gemma4Options.Default;
    public Qwen2VlOptions Qwen2Vl { get; init; } = Qwen2VlOptions.Default;
    public MatmulOptions Matmul { get; init; } = MatmulOptions.Default;

    /// <summary>A config fault: config.json edited before the engine loads it (the reference keeps the original).</summary>
    public Action<JsonObject>? ConfigEdit { get; init; }
}

/// <summary>
/// The ONE map from a fault name (<see cref="Faults"/>) to where it acts in each model family: which model class takes
/// it and the <see cref="FaultPlan"/> that plants it. Scenarios, `harness run --fault`, `repro --fault` and `compare --fault`
/// all read it; a family has a fault when it has a row here, and nothing else in the engine or the harness maps a fault
/// name to options. A new fault adds its constant to <see cref="Faults"/> and its rows here.
/// </summary>
public static class FaultMap
{
    /// <summary>One fault in one family: the model class it acts in, and the plan that plants it there.</summary>
    /// <param name="Family">The family's name ("llama", "gemma3n", "gemma4", "qwen2-vl"; "ops" for the op-level scenarios).</param>
    /// <param name="Model">The engine class whose constructor takes the plan (a family's compare builds only some of them).</param>
    /// <param name="Layout">Why a TP x PP (SP) layout cannot show the fault (null: any layout), e.g. a sequence-parallel bug without --sp.</param>
    public sealed record Site(string Fault, string Family, string Model, FaultPlan Plan, Func<int, int, bool, string?>? Layout = null)
    {
        /// <summary>Why the layout cannot show this fault, or null.</summary>
        public string? LayoutProblem(int tp, int pp, bool sp) => Layout?.Invoke(tp, pp, sp);
    }

    private static string? NeedsSp(int tp, int pp, bool sp) =>
        sp && tp > 1 ? null : "acts in sequence parallelism only: it needs --sp with --tp 2 or more";

    private static string? NeedsSpPp(int tp, int pp, bool sp) =>
        sp && tp > 1 && pp > 1 ? null : "acts where a sequence-parallel residual crosses a pipeline stage: it needs --sp, --tp 2 or more and --pp 2 or more";

    private static string? NeedsTp(int tp, int pp, bool sp) =>
        tp > 1 ? null : "acts under tensor parallelism only: it needs --tp 2 or more";

    /// <summary>Every site, grouped by family.</summary>
    public static IReadOnlyList<Site> Sites { get; } =
    [
        new(Faults.SpResidualFirstSlice, "llama", "LlamaForCausalLM", new() { Llama = new() { SpResidualFirstSlice = true } }, NeedsSp),
        new(Faults.SpPpResidualSliced, "llama", "LlamaForCausalLM", new() { Llama = new() { SpPpResidualSliced = true } }, NeedsSpPp),
        new(Faults.RmsNormSumOfSquaresBf16, "llama", "LlamaForCausalLM", new() { Llama = new() { NormSumOfSquaresBf16 = true } }),
        new(Faults.ResidualScaleOff, "llama", "LlamaForCausalLM", new() { Llama = new() { ResidualBranchScale = 1 + Math.ScaleB(1, -6) } }),
        // config faults: the field as a loader that did not read it would see it
        new(Faults.RopeScalingIgnored, "llama", "LlamaForCausalLM", new() { ConfigEdit = DropRopeScaling }),
        new(Faults.RopeThetaDefault, "llama", "LlamaForCausalLM", new() { ConfigEdit = c => RopeParameters(c)["rope_theta"] = 10000.0 }),
        new(Faults.RmsNormEpsDefault, "llama", "LlamaForCausalLM", new() { ConfigEdit = c => c["rms_norm_eps"] = 1e-6 }),
        new(Faults.DecodePositionOffByOne, "llama", "LlamaForCausalLM", new() { Llama = new() { DecodePositionOffset = 1 } }),

        new(Faults.RowParallelInputIsParallel, "gemma3n", "Gemma3nModel", new() { Gemma3n = new() { EmbedderInputIsParallel = true } }, NeedsTp),
        new(Faults.SparseTopKRankLocal, "gemma3n", "Gemma3nModel", new() { Gemma3n = new() { SparseTopKRankLocal = true } }, NeedsTp),
        new(Faults.UsmRelShiftSkipped, "gemma3n", "Gemma3nAudioEncoder", new() { Gemma3n = new() { AudioRelShiftSkipped = true } }),
        new(Faults.CumulativeNormPlainMean, "gemma3n", "Gemma3nAudioEncoder", new() { Gemma3n = new() { AudioSscpNormPlainMean = true } }),
        new(Faults.MobileNetSamePadSymmetric, "gemma3n", "MobileNetV5Encoder", new() { Gemma3n = new() { VisionSamePadSymmetric = true } }),
        new(Faults.MobileNetUirResidualDropped, "gemma3n", "MobileNetV5Encoder", new() { Gemma3n = new() { VisionUirResidualDropped = true } }),

        new(Faults.GeluTanhAsExact, "gemma4", "Gemma4ForCausalLM", new() { Gemma4 = new() { ExpertsActivation = "gelu" } }),
        new(Faults.GateUpSwapped, "gemma4", "Gemma4ForCausalLM", new() { Gemma4 = new() { ExpertsGateUpSwapped = true } }),
        new(Faults.RowParallelInputIsParallel, "gemma4", "Gemma4ForConditionalGeneration", new() { Gemma4 = new() { EmbedderInputIsParallel = true } }, NeedsTp),
        new(Faults.MatmulNoNdBroadcast, "gemma4", "Gemma4AudioModel", new() { Matmul = MatmulOptions.PreFixBatchInvariant }),
        new(Faults.MatmulNoNdBroadcast, "gemma4", "Gemma4VisionModel", new() { Matmul = MatmulOptions.PreFixBatchInvariant }),

        new(Faults.AttentionReshapeHiddenSize, "qwen2-vl", "Qwen2VlForConditionalGeneration", new() { Qwen2Vl = new() { AttentionReshapeHiddenSize = true } }, NeedsTp),
        new(Faults.AttentionReshapeHiddenSize, "qwen2-vl", "Qwen2VlAttention", new() { Qwen2Vl = new() { AttentionReshapeHiddenSize = true } }, NeedsTp),
        new(Faults.MropeDecodeDeltaIgnored, "qwen2-vl", "Qwen2VlForConditionalGeneration", new() { Qwen2Vl = new() { DecodeRopeDeltaIgnored = true } }),

        new(Faults.MatmulNoNdBroadcast, "ops", "Matmul", new() { Matmul = MatmulOptions.PreFixBatchInvariant }),
    ];

    /// <summary>
    /// The plan for <paramref name="fault"/> in <paramref name="family"/>: <see cref="FaultPlan.None"/> for no fault or a known
    /// fault the family has no site for (`run --fault NAME` over the whole catalog: a scenario that cannot see it shows so).
    /// An unknown name is an ArgumentException listing the known ones.
    /// </summary>
    public static FaultPlan Plan(string? fault, string family)
    {
        if (fault is null) return FaultPlan.None;
        Faults.Check(fault);
        return Sites.FirstOrDefault(s => s.Fault == fault && s.Family == family)?.Plan ?? FaultPlan.None;
    }

    /// <summary>The sites of a family (every model class), in table order.</summary>
    public static IReadOnlyList<Site> Of(string family) => Sites.Where(s => s.Family == family).ToList();

    /// <summary>The site of a fault in one model class, or null when that class has none.</summary>
    public static Site? In(string fault, string family, string model) =>
        Sites.FirstOrDefault(s => s.Fault == fault && s.Family == family && s.Model == model);

    // rope_parameters (transformers 5) or the config's root (rope_theta / rope_scaling at the top level, as older configs have them)
    private static JsonObject RopeParameters(JsonObject c) => c["rope_parameters"] as JsonObject ?? c;

    private static void DropRopeScaling(JsonObject c)
    {
        if (c["rope_parameters"] is JsonObject rope)
            c["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = rope["rope_theta"]?.DeepClone() };
        c.Remove("rope_scaling");
    }
}
