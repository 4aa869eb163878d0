using Harness.Engine.Ops;
using Harness.Engine.Tensors;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Models.Gemma4.Audio;

/// <summary>
/// Checks of Gemma4's tower weights and inputs (their torch ops are <see cref="TowerOps"/>, device dispatch included).
/// </summary>
internal static class Gemma4TowerKernels
{
    /// <summary>A checkpoint tensor must have the shape its config implies; otherwise an error naming both and the config field.</summary>
    public static Tensor Expect(Tensor t, string name, int[] shape, string field)
    {
        if (!t.Shape.SequenceEqual(shape))
            throw new ArgumentException($"{name} is {Shape.Format(t.Shape)} but the config ({field}) implies {Shape.Format(shape)}");
        return t;
    }

    /// <summary>A bool tensor's values.</summary>
    public static bool[] Bools(Tensor mask)
    {
        if (mask.DType != DType.Bool) throw new ArgumentException($"expected a bool mask, got {mask.DType.TorchName()} {Shape.Format(mask.Shape)}");
        return mask.ToHost().Contiguous().Span<bool>().ToArray();   // an input mask: read on the host (control flow)
    }
}
