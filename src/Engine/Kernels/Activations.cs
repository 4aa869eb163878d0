using System.Numerics.Tensors;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels;

/// <summary>
/// Activation kernels on float32 spans. <paramref name="dtype"/> is the tensor's dtype: the fused torch kernels
/// (F.gelu, F.silu, relu) compute in float32 and the caller rounds once; HF's Python-formula activations
/// (NewGELUActivation, QuickGELUActivation) run op by op, so each intermediate is rounded to the dtype here, as torch does.
/// </summary>
public static class Activations
{
    private const float SqrtHalf = 0.70710678118654752440f;              // M_SQRT1_2
    private const float TanhBeta = (float)(1.41421356237309504880 * 1.12837916709551257390 * 0.5); // M_SQRT2 * M_2_SQRTPI * 0.5
    private const float TanhKappa = 0.044715f;
    private static readonly float SqrtTwoOverPi = (float)Math.Sqrt(2.0 / Math.PI); // math.sqrt(2.0 / math.pi) in NewGELU

    public static void Apply(ActivationKind kind, ReadOnlySpan<float> x, Span<float> y, DType dtype)
    {
        switch (kind)
        {
            case ActivationKind.Gelu:
                // aten GeluKernel (none): x * 0.5 * (1 + erf(x * M_SQRT1_2))
                for (int i = 0; i < x.Length; i++)
                {
                    float v = x[i];
                    y[i] = v * 0.5f * (1f + Erf.Compute(v * SqrtHalf));
                }
                break;
            case ActivationKind.GeluTanh:
                // aten GeluKernel (tanh): inner = kBeta * (x + kKappa * x^3); 0.5 * x * (1 + tanh(inner))
                for (int i = 0; i < x.Length; i++)
                {
                    float v = x[i];
                    float cube = v * v * v;
                    float inner = TanhBeta * (v + TanhKappa * cube);
                    y[i] = 0.5f * v * (1f + MathF.Tanh(inner));
                }
                break;
            case ActivationKind.GeluNew:
                // HF NewGELUActivation, op by op: 0.5 * x * (1.0 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3.0))))
                for (int i = 0; i < x.Length; i++)
                {
                    float v = x[i];
                    float cube = Rounding.To(v * v * v, dtype);
                    float t = Rounding.To(TanhKappa * cube, dtype);
                    t = Rounding.To(v + t, dtype);
                    t = Rounding.To(SqrtTwoOverPi * t, dtype);
                    t = Rounding.To(MathF.Tanh(t), dtype);
                    t = Rounding.To(1f + t, dtype);
                    float half = Rounding.To(0.5f * v, dtype);
                    y[i] = half * t;
                }
                break;
            case ActivationKind.Silu:
                // aten silu: x / (1 + exp(-x))
                TensorPrimitives.Negate(x, y);
                TensorPrimitives.Exp(y, y);
                TensorPrimitives.Add(y, 1f, y);
                TensorPrimitives.Divide(x, y, y);
                break;
            case ActivationKind.Relu:
                for (int i = 0; i < x.Length; i++) { float v = x[i]; y[i] = v > 0f || float.IsNaN(v) ? v : 0f; }
                break;
            case ActivationKind.QuickGelu:
                // HF QuickGELUActivation, op by op: x * sigmoid(1.702 * x)
                for (int i = 0; i < x.Length; i++)
                {
                    float v = x[i];
                    float a = Rounding.To(1.702f * v, dtype);
                    float s = Rounding.To(1f / (1f + MathF.Exp(-a)), dtype);
                    y[i] = v * s;
                }
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown activation");
        }
    }
}
