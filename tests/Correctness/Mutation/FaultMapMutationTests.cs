using System.Text.Json.Nodes;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Models.Llama;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.Ops;
using Harness.Engine.Runtime;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The one fault map (src/Engine/Models/FaultMap.cs) row by row: which model class takes each fault, the exact plan it
/// plants, the layouts that cannot show it and why, and the config edits. The catalog only checks that a planted fault
/// is caught, so a row planted in the wrong class, a plan that plants nothing, or a layout message emptied went
/// through (the Stryker.NET mutants of FaultMap.cs; its table is a static initializer: replayed one process per mutant).
/// </summary>
public class FaultMapMutationTests
{
    private const string Sp = "acts in sequence parallelism only: it needs --sp with --tp 2 or more";
    private const string SpPp = "acts where a sequence-parallel residual crosses a pipeline stage: it needs --sp, --tp 2 or more and --pp 2 or more";
    private const string Tp = "acts under tensor parallelism only: it needs --tp 2 or more";

    private static FaultMap.Site Row(int i) => FaultMap.Sites[i];

    [Fact]
    public void Every_row_names_its_fault_family_and_model_class()
    {
        (string Fault, string Family, string Model)[] want =
        [
            (Faults.SpResidualFirstSlice, "llama", "LlamaForCausalLM"),
            (Faults.SpPpResidualSliced, "llama", "LlamaForCausalLM"),
            (Faults.RmsNormSumOfSquaresBf16, "llama", "LlamaForCausalLM"),
            (Faults.ResidualScaleOff, "llama", "LlamaForCausalLM"),
            (Faults.RopeScalingIgnored, "llama", "LlamaForCausalLM"),
            (Faults.RopeThetaDefault, "llama", "LlamaForCausalLM"),
            (Faults.RmsNormEpsDefault, "llama", "LlamaForCausalLM"),
            (Faults.DecodePositionOffByOne, "llama", "LlamaForCausalLM"),
            (Faults.RowParallelInputIsParallel, "gemma3n", "Gemma3nModel"),
            (Faults.SparseTopKRankLocal, "gemma3n", "Gemma3nModel"),
            (Faults.UsmRelShiftSkipped, "gemma3n", "Gemma3nAudioEncoder"),
            (Faults.CumulativeNormPlainMean, "gemma3n", "Gemma3nAudioEncoder"),
            (Faults.MobileNetSamePadSymmetric, "gemma3n", "MobileNetV5Encoder"),
            (Faults.MobileNetUirResidualDropped, "gemma3n", "MobileNetV5Encoder"),
            (Faults.GeluTanhAsExact, "gemma4", "Gemma4ForCausalLM"),
            (Faults.GateUpSwapped, "gemma4", "Gemma4ForCausalLM"),
            (Faults.RowParallelInputIsParallel, "gemma4", "Gemma4ForConditionalGeneration"),
            (Faults.MatmulNoNdBroadcast, "gemma4", "Gemma4AudioModel"),
            (Faults.MatmulNoNdBroadcast, "gemma4", "Gemma4VisionModel"),
            (Faults.AttentionReshapeHiddenSize, "qwen2-vl", "Qwen2VlForConditionalGeneration"),
            (Faults.AttentionReshapeHiddenSize, "qwen2-vl", "Qwen2VlAttention"),
            (Faults.MropeDecodeDeltaIgnored, "qwen2-vl", "Qwen2VlForConditionalGeneration"),
            (Faults.MatmulNoNdBroadcast, "ops", "Matmul"),
        ];
        Assert.Equal(want, FaultMap.Sites.Select(s => (s.Fault, s.Family, s.Model)).ToArray());
    }

    [Fact]
    public void Every_row_plants_exactly_its_option()
    {
        // mutants: each `= true` as false, the residual scale 1 + 2^-6 as 1 - 2^-6 or 1 + 2^6, "gelu" emptied
        Assert.Equal(new LlamaOptions { SpResidualFirstSlice = true }, Row(0).Plan.Llama);
        Assert.Equal(new LlamaOptions { SpPpResidualSliced = true }, Row(1).Plan.Llama);
        Assert.Equal(new LlamaOptions { NormSumOfSquaresBf16 = true }, Row(2).Plan.Llama);
        Assert.Equal(new LlamaOptions { ResidualBranchScale = 1.015625 }, Row(3).Plan.Llama);
        Assert.Equal(new LlamaOptions { DecodePositionOffset = 1 }, Row(7).Plan.Llama);
        Assert.Equal(new Gemma3nOptions { EmbedderInputIsParallel = true }, Row(8).Plan.Gemma3n);
        Assert.Equal(new Gemma3nOptions { SparseTopKRankLocal = true }, Row(9).Plan.Gemma3n);
        Assert.Equal(new Gemma3nOptions { AudioRelShiftSkipped = true }, Row(10).Plan.Gemma3n);
        Assert.Equal(new Gemma3nOptions { AudioSscpNormPlainMean = true }, Row(11).Plan.Gemma3n);
        Assert.Equal(new Gemma3nOptions { VisionSamePadSymmetric = true }, Row(12).Plan.Gemma3n);
        Assert.Equal(new Gemma3nOptions { VisionUirResidualDropped = true }, Row(13).Plan.Gemma3n);
        Assert.Equal(new Gemma4Options { ExpertsActivation = "gelu" }, Row(14).Plan.Gemma4);
        Assert.Equal(new Gemma4Options { ExpertsGateUpSwapped = true }, Row(15).Plan.Gemma4);
        Assert.Equal(new Gemma4Options { EmbedderInputIsParallel = true }, Row(16).Plan.Gemma4);
        Assert.Same(MatmulOptions.PreFixBatchInvariant, Row(17).Plan.Matmul);
        Assert.Same(MatmulOptions.PreFixBatchInvariant, Row(18).Plan.Matmul);
        Assert.Equal(new Qwen2VlOptions { AttentionReshapeHiddenSize = true }, Row(19).Plan.Qwen2Vl);
        Assert.Equal(new Qwen2VlOptions { AttentionReshapeHiddenSize = true }, Row(20).Plan.Qwen2Vl);
        Assert.Equal(new Qwen2VlOptions { DecodeRopeDeltaIgnored = true }, Row(21).Plan.Qwen2Vl);
        Assert.Same(MatmulOptions.PreFixBatchInvariant, Row(22).Plan.Matmul);
        // the config faults plant nothing but their edit
        foreach (int i in new[] { 4, 5, 6 })
        {
            Assert.Equal(LlamaOptions.None, Row(i).Plan.Llama);
            Assert.NotNull(Row(i).Plan.ConfigEdit);
        }
    }

    [Fact]
    public void The_layout_rules_refuse_exactly_the_layouts_that_cannot_show_the_fault()
    {
        // mutants: each condition of NeedsSp / NeedsSpPp / NeedsTp (`&&` as `||`, `> 1` as `>= 1` or `< 1`, the
        // conditional forced either way) and each message emptied
        string? Sp0(int tp, int pp, bool sp) => Row(0).LayoutProblem(tp, pp, sp);
        Assert.Null(Sp0(2, 1, true));
        Assert.Null(Sp0(4, 2, true));
        Assert.Equal(Sp, Sp0(1, 1, true));
        Assert.Equal(Sp, Sp0(2, 1, false));
        Assert.Equal(Sp, Sp0(0, 1, true));

        string? SpPp1(int tp, int pp, bool sp) => Row(1).LayoutProblem(tp, pp, sp);
        Assert.Null(SpPp1(2, 2, true));
        Assert.Equal(SpPp, SpPp1(2, 1, true));
        Assert.Equal(SpPp, SpPp1(1, 2, true));
        Assert.Equal(SpPp, SpPp1(2, 2, false));
        Assert.Equal(SpPp, SpPp1(0, 2, true));
        Assert.Equal(SpPp, SpPp1(2, 0, true));
        Assert.Equal(SpPp, SpPp1(1, 1, true));

        foreach (int i in new[] { 8, 9, 16, 19, 20 })
        {
            Assert.Null(Row(i).LayoutProblem(2, 1, false));
            Assert.Equal(Tp, Row(i).LayoutProblem(1, 2, true));
            Assert.Equal(Tp, Row(i).LayoutProblem(0, 1, false));
        }
        foreach (int i in new[] { 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 17, 18, 21, 22 })
            Assert.Null(Row(i).LayoutProblem(1, 1, false));
    }

    [Fact]
    public void The_config_edits_set_theta_and_eps_and_drop_rope_scaling_in_both_layouts()
    {
        // mutants: the keys emptied, RopeParameters always the root, DropRopeScaling's replacement object emptied or its
        // keys and "default" emptied, rope_scaling kept
        var dropScaling = Row(4).Plan.ConfigEdit!;
        var theta = Row(5).Plan.ConfigEdit!;
        var eps = Row(6).Plan.ConfigEdit!;

        var v5 = JsonNode.Parse("""{"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}, "rms_norm_eps": 1e-5}""")!.AsObject();
        theta(v5);
        Assert.Equal(10000.0, v5["rope_parameters"]!["rope_theta"]!.GetValue<double>());
        Assert.Null(v5["rope_theta"]);
        eps(v5);
        Assert.Equal(1e-6, v5["rms_norm_eps"]!.GetValue<double>());
        dropScaling(v5);
        Assert.Equal("""{"rope_type":"default","rope_theta":10000}""", v5["rope_parameters"]!.ToJsonString());

        var v4 = JsonNode.Parse("""{"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}""")!.AsObject();
        theta(v4);
        Assert.Equal(10000.0, v4["rope_theta"]!.GetValue<double>());
        dropScaling(v4);
        Assert.False(v4.ContainsKey("rope_scaling"));
        Assert.False(v4.ContainsKey("rope_parameters"));
        Assert.Equal(10000.0, v4["rope_theta"]!.GetValue<double>());
    }

    [Fact]
    public void Plan_of_and_in_pick_the_row_of_the_fault_family_and_model()
    {
        // mutants: `fault is null` inverted, Faults.Check removed, `?? None` always None, FirstOrDefault as First, each
        // `==` as `!=` and `&&` as `||` of the three look-ups
        Assert.Same(FaultPlan.None, FaultMap.Plan(null, "llama"));
        Assert.Same(Row(16).Plan, FaultMap.Plan(Faults.RowParallelInputIsParallel, "gemma4"));
        Assert.Same(Row(8).Plan, FaultMap.Plan(Faults.RowParallelInputIsParallel, "gemma3n"));
        Assert.Same(Row(22).Plan, FaultMap.Plan(Faults.MatmulNoNdBroadcast, "ops"));
        Assert.Same(FaultPlan.None, FaultMap.Plan(Faults.MatmulNoNdBroadcast, "llama"));   // no row: none, not a throw
        var ex = Assert.Throws<ArgumentException>(() => FaultMap.Plan("no-such-fault", "llama"));
        Assert.StartsWith("unknown fault 'no-such-fault'", ex.Message);

        Assert.Equal(new[] { 19, 20, 21 }.Select(Row), FaultMap.Of("qwen2-vl"));
        Assert.Same(Row(20), FaultMap.In(Faults.AttentionReshapeHiddenSize, "qwen2-vl", "Qwen2VlAttention"));
        Assert.Same(Row(19), FaultMap.In(Faults.AttentionReshapeHiddenSize, "qwen2-vl", "Qwen2VlForConditionalGeneration"));
        Assert.Same(Row(18), FaultMap.In(Faults.MatmulNoNdBroadcast, "gemma4", "Gemma4VisionModel"));
        Assert.Null(FaultMap.In(Faults.MatmulNoNdBroadcast, "gemma4", "Gemma4ForCausalLM"));
        Assert.Null(FaultMap.In(Faults.MatmulNoNdBroadcast, "llama", "Matmul"));
        Assert.Null(FaultMap.In(Faults.GateUpSwapped, "ops", "Matmul"));
    }
}
