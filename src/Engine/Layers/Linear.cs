using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Layers;

/// <summary>
/// nn.Linear: y = x W^T (+ b). The weight is [out_features, in_features] as HF stores it; the GEMM reads its transpose
/// through strides, no copy. Input [..., in], output [..., out].
/// </summary>
public sealed class Linear(Tensor weight, Tensor? bias = null)
{
    public Tensor Weight { get; } = weight.Rank == 2 ? weight
        : throw new ArgumentException($"a Linear weight is [out_features, in_features], got shape {Shape.Format(weight.Shape)}");
    public Tensor? Bias { get; } = bias;

    public int InFeatures => Weight.Shape[1];
    public int OutFeatures => Weight.Shape[0];

    public Tensor Forward(Tensor x)
    {
        if (x.Size(-1) != InFeatures)
            throw new ArgumentException(
                $"mat1 and mat2 shapes cannot be multiplied ({x.NumEl / Math.Max(x.Size(-1), 1)}x{x.Size(-1)} and {InFeatures}x{OutFeatures})");
        var y = Matmul.Forward(x, Weight.T()); // [..., out]
        return Bias is null ? y : Elementwise.Add(y, Bias);
    }
}
