using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.MatmulSemantics;

/// <summary>
/// Mutation check for scenario 1: vLLM's batch-invariant matmul had no ND x ND path, so Gemma4-E2B's
/// 4D x 3D product died with a shape error. With that fault injected the product must fail; without it, it must pass.
/// </summary>
public class MatmulFaultTests
{
    [Fact]
    public void Gemma4_E2B_4D_x_3D_fails_with_a_shape_error_when_the_ND_path_is_disabled()
    {
        using var invariant = ComputeSettings.UseBatchInvariant();
        var a = Tensor.Randn(DType.BFloat16, 1, 1, 2, 32, 64);
        var b = Tensor.Randn(DType.BFloat16, 2, 2, 64, 16);

        var ex = Assert.Throws<ArgumentException>(() => Matmul.Forward(a, b, MatmulOptions.PreFixBatchInvariant));
        Assert.Contains("[1, 2, 32, 64] and [2, 64, 16]", ex.Message);

        var fixedResult = Matmul.Forward(a, b);
        Assert.Equal([1, 2, 32, 16], fixedResult.ShapeArray);
        MatmulShapeTests.AssertClose(a, b, fixedResult);
    }

    [Fact]
    public void The_shapes_vLLM_already_supported_still_work_with_the_fault()
    {
        var preFix = MatmulOptions.PreFixBatchInvariant;
        Assert.Equal([4, 32, 16], Matmul.Forward(Tensor.Zeros(DType.Float32, 4, 32, 64), Tensor.Zeros(DType.Float32, 64, 16), preFix).ShapeArray);
        Assert.Equal([2, 3, 5], Matmul.Forward(Tensor.Zeros(DType.Float32, 2, 3, 4), Tensor.Zeros(DType.Float32, 2, 4, 5), preFix).ShapeArray);
    }

    [Fact]
    public void The_fault_is_an_explicit_input_not_ambient_state()
    {
        Assert.Equal([1, 2, 32, 16], Matmul.Forward(Tensor.Zeros(DType.Float32, 1, 2, 32, 64), Tensor.Zeros(DType.Float32, 2, 64, 16)).ShapeArray);
        Assert.Same(MatmulOptions.PreFixBatchInvariant, Harness.Engine.Models.FaultMap.Plan(Faults.MatmulNoNdBroadcast, "ops").Matmul);
    }

    [Fact]
    public void Unknown_fault_name_lists_the_known_faults()
    {
        var ex = Assert.Throws<ArgumentException>(() => Faults.Check("no-such-fault"));
        Assert.Contains(Faults.MatmulNoNdBroadcast, ex.Message);
    }
}
