using System.Diagnostics.CodeAnalysis;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// Scenario 1: the engine's batch-invariant matmul against torch.matmul on a shape pair, e.g. Gemma4-E2B's 4D x 3D
/// product [1, 2, 32, 64] x [2, 64, 16]. The module compared is "matmul"; with the fault matmul-no-nd-broadcast
/// (vLLM before its fix) the engine dies there with a shape error.
/// </summary>
public sealed record MatmulScenario : TensorScenario
{
    public int[] ShapeA { get; }
    public int[] ShapeB { get; }

    [SetsRequiredMembers]
    public MatmulScenario(string name, int[] a, int[] b, DType dtype, string? fault = null)
    {
        ShapeA = a;
        ShapeB = b;
        Id = BuildId("matmul", [name], dtype, fault);
        Model = "matmul";
        Layout = "batch-invariant";
        DType = dtype;
        Input = "tensors";
        Fault = fault;
        ExpectedFirstBadModule = fault is null ? null : "matmul";
        Tolerance = Policy.Name;
        ReferenceKey = $"matmul-{name}-{DTypeTag(dtype)}";
        Description = $"torch.matmul {Shape.Format(a)} x {Shape.Format(b)} in {dtype.TorchName()}, batch-invariant mode" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    public override IReadOnlyList<string> Modules => ["matmul"];

    public override TolerancePolicy Policy => Tolerances.GemmFor(DType);

    private Tensor A => Tensor.Normal(DType, 31, 0, 1, ShapeA);
    private Tensor B => Tensor.Normal(DType, 32, 0, 1, ShapeB);

    protected override IReadOnlyDictionary<string, Tensor> SeededInputs() => new Dictionary<string, Tensor> { ["a"] = A, ["b"] = B };

    protected override IReadOnlyDictionary<string, Tensor> Reference(ReferenceClient client) =>
        new Dictionary<string, Tensor> { ["matmul"] = client.Matmul(A, B) };

    protected override void Engine(IActivationSink sink)
    {
        using var invariant = ComputeSettings.UseBatchInvariant();
        Tensor result;
        try
        {
            result = Matmul.Forward(CudaScenarios.Input(Device, A)!, CudaScenarios.Input(Device, B)!, Harness.Engine.Models.FaultMap.Plan(Fault, "ops").Matmul);
        }
        catch (Exception e)
        {
            throw new ModuleFailedException("matmul", 0, e);
        }
        sink.Record("matmul", 0, result.ToHost(), ShardSpec.Whole);   // the capture: a host copy on the GPU
    }
}
