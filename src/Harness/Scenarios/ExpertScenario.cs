using System.Diagnostics.CodeAnalysis;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Layers;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// Scenario 5: one Gemma4 MoE expert (a gated MLP with gelu_pytorch_tanh, 64 -> 128 -> 64, unit-scale activations)
/// against torch. In float32 the fault gelu-tanh-as-exact (exact GELU in place of tanh GELU, ~5e-4 per activation)
/// must be caught at "expert"; bf16 runs must not flake on rounding.
/// </summary>
public sealed record ExpertScenario : TensorScenario
{
    private const int Tokens = 16, Hidden = 64, Intermediate = 128;

    [SetsRequiredMembers]
    public ExpertScenario(DType dtype, string? fault = null)
    {
        Id = $"gemma4-expert/gelu-tanh/{DTypeTag(dtype)}{(fault is null ? "" : $"/fault={fault}")}";
        Model = "gemma4-expert";
        Layout = "single";
        DType = dtype;
        Input = "tensors";
        Fault = fault;
        ExpectedFirstBadModule = fault is null ? null : "expert";
        Tolerance = Policy.Name;
        ReferenceKey = $"gemma4-expert-{DTypeTag(dtype)}";
        Description = $"Gemma4 MoE expert (gated MLP, gelu_pytorch_tanh) in {dtype.TorchName()}" + (fault is null ? "" : $"; injected fault {fault}");
    }

    public override IReadOnlyList<string> Modules => ["expert"];

    public override TolerancePolicy Policy => DType == DType.Float32 ? Tolerances.Float32Gemm : Tolerances.BFloat16Layer;

    private Tensor X => Tensor.Normal(DType, 41, 0, 1, Tokens, Hidden);
    private Tensor Gate => Tensor.Normal(DType, 42, 0, 1 / MathF.Sqrt(Hidden), Intermediate, Hidden);
    private Tensor Up => Tensor.Normal(DType, 43, 0, 1 / MathF.Sqrt(Hidden), Intermediate, Hidden);
    private Tensor Down => Tensor.Normal(DType, 44, 0, 1 / MathF.Sqrt(Intermediate), Hidden, Intermediate);

    protected override IReadOnlyDictionary<string, Tensor> SeededInputs() => new Dictionary<string, Tensor> { ["x"] = X, ["gate_proj"] = Gate, ["up_proj"] = Up, ["down_proj"] = Down };

    protected override IReadOnlyDictionary<string, Tensor> Reference(ReferenceClient client) =>
        new Dictionary<string, Tensor> { ["expert"] = client.Mlp("gelu_pytorch_tanh", X, Gate, Up, Down) };

    protected override void Engine(IActivationSink sink) =>
        sink.Record("expert", 0, GatedMlp.FromWeights(Gate, Up, Down, "gelu_pytorch_tanh").Forward(X), ShardSpec.Whole);
}
