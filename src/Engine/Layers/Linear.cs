using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Layers;

/// <summary>
/// nn.Linear: y = x W^T (+ b), the bias added before the one rounding to a low-precision dtype, as torch's addmm. The weight is [out_features, in_features] as HF stores it; the GEMM reads its transpose
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
        if (Bias is null) return Matmul.Forward(x, Weight.T());   // [..., out]
        if (x.DType == DType.Float32) return Elementwise.Add(Matmul.Forward(x, Weight.T()), Bias);
        // torch's addmm for bf16/fp16 accumulates in float32, adds the bias there and rounds once (F.linear with a bias
        // equals (x.float() @ W.float().T + b.float()).to(dtype) bit for bit; rounding the product first differs by an ulp).
        // bf16/fp16 products are exact in float32, so the float32 GEMM is the low-precision GEMM before its rounding.
        var y32 = Matmul.Forward(x.To(DType.Float32), Weight.T().To(DType.Float32));
        return Elementwise.Add(y32, Bias.To(DType.Float32)).To(x.DType);
    }
}
