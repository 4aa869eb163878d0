using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;

namespace Harness.Engine.Ops;

/// <summary>HF activation functions (config hidden_act / hidden_activation), by HF's ACT2FN names.</summary>
public enum ActivationKind
{
    /// <summary>"gelu": F.gelu exact, x * 0.5 * (1 + erf(x / sqrt(2))).</summary>
    Gelu,
    /// <summary>"gelu_pytorch_tanh" / "gelu_tanh": F.gelu(approximate="tanh"), fused, one rounding.</summary>
    GeluTanh,
    /// <summary>"gelu_new": HF NewGELUActivation, the same tanh formula as Python ops (bf16 rounds after each op).</summary>
    GeluNew,
    /// <summary>"silu" / "swish": x / (1 + exp(-x)).</summary>
    Silu,
    /// <summary>"relu".</summary>
    Relu,
    /// <summary>"quick_gelu": HF QuickGELUActivation, x * sigmoid(1.702 * x) as Python ops.</summary>
    QuickGelu,
}

/// <summary>Parsing and application of <see cref="ActivationKind"/>: plain act(x) and gated act(x[..., :d]) * x[..., d:].</summary>
public static class Activation
{
    /// <summary>Every accepted name (HF's keys plus aliases) and its kind.</summary>
    public static readonly IReadOnlyDictionary<string, ActivationKind> Names = new Dictionary<string, ActivationKind>
    {
        ["gelu"] = ActivationKind.Gelu,
        ["gelu_pytorch_tanh"] = ActivationKind.GeluTanh,
        ["gelu_tanh"] = ActivationKind.GeluTanh,
        ["gelu_new"] = ActivationKind.GeluNew,
        ["silu"] = ActivationKind.Silu,
        ["swish"] = ActivationKind.Silu,
        ["relu"] = ActivationKind.Relu,
        ["quick_gelu"] = ActivationKind.QuickGelu,
    };

    /// <summary>Parses an HF activation name (case-sensitive, as HF's ACT2FN); an unknown name lists every known one.</summary>
    public static ActivationKind Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (Names.TryGetValue(name.Trim(), out var kind))
            return kind;
        throw new ArgumentException(
            $"unknown activation '{name}'; known: {string.Join(", ", Names.Keys.Order(StringComparer.Ordinal))}", nameof(name));
    }

    /// <summary>The canonical HF name of a kind.</summary>
    public static string Name(ActivationKind kind) => kind switch
    {
        ActivationKind.Gelu => "gelu",
        ActivationKind.GeluTanh => "gelu_pytorch_tanh",
        ActivationKind.GeluNew => "gelu_new",
        ActivationKind.Silu => "silu",
        ActivationKind.Relu => "relu",
        ActivationKind.QuickGelu => "quick_gelu",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>act(x), same dtype and shape as x.</summary>
    public static Tensor Apply(Tensor x, ActivationKind kind)
    {
        OpSupport.RequireFloat(x, Name(kind));
        if (x.IsCuda) return CudaApply(x, kind);
        var f = OpSupport.Float32Contiguous(x);
        var y = Tensor.Zeros(DType.Float32, x.ShapeArray);
        K.Activations.Apply(kind, f.Span<float>(), y.Span<float>(), x.DType);
        return OpSupport.FromFloat32(y, x.DType);
    }

    /// <summary>Gated: act(x[..., :d]) * x[..., d:] over the last dim (2d wide); the result has last dim d.</summary>
    public static Tensor ApplyGated(Tensor x, ActivationKind kind)
    {
        if (x.Rank == 0 || x.Size(-1) % 2 != 0)
            throw new ArgumentException(
                $"gated {Name(kind)}: the last dimension must be even (gate and up halves), got shape {Shape.Format(x.Shape)}");
        int d = x.Size(-1) / 2;
        return ApplyGated(x.Narrow(-1, 0, d), x.Narrow(-1, d, d), kind);
    }

    /// <summary>act(gate) * up, as HF's MLPs do: act rounds to the dtype, then the product rounds again.</summary>
    public static Tensor ApplyGated(Tensor gate, Tensor up, ActivationKind kind)
    {
        if (gate.IsCuda && up.IsCuda && gate.DType == up.DType && Shape.SequenceEqual(gate.Shape, up.Shape) && kind != ActivationKind.GeluNew)
            return kind switch
            {
                ActivationKind.Gelu => Cuda.CudaOps.Gated<Cuda.Kernels.GeluExactOp>(gate, up),
                ActivationKind.GeluTanh => Cuda.CudaOps.Gated<Cuda.Kernels.GeluTanhOp>(gate, up),
                ActivationKind.Silu => Cuda.CudaOps.Gated<Cuda.Kernels.SiluOp>(gate, up),
                ActivationKind.Relu => Cuda.CudaOps.Gated<Cuda.Kernels.ReluOp>(gate, up),
                _ => Cuda.CudaOps.Gated<Cuda.Kernels.QuickGeluOp>(gate, up),
            };
        var a = Apply(gate, kind);
        return Elementwise.Mul(a, up);
    }

    // The CUDA kernels, one per kind (gelu_new rounds after each op in bf16 on the host path; on the device it is the
    // tanh formula in float32, one rounding: exact for float32 only).
    private static Tensor CudaApply(Tensor x, ActivationKind kind) => kind switch
    {
        ActivationKind.Gelu => Cuda.CudaOps.Unary<Cuda.Kernels.GeluExactOp>(x),
        ActivationKind.GeluTanh or ActivationKind.GeluNew => Cuda.CudaOps.Unary<Cuda.Kernels.GeluTanhOp>(x),
        ActivationKind.Silu => Cuda.CudaOps.Unary<Cuda.Kernels.SiluOp>(x),
        ActivationKind.Relu => Cuda.CudaOps.Unary<Cuda.Kernels.ReluOp>(x),
        ActivationKind.QuickGelu => Cuda.CudaOps.Unary<Cuda.Kernels.QuickGeluOp>(x),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };
}
