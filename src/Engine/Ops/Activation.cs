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
        return OpBackend.Of(x).Activation(x, kind);
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
        if (OpBackend.Of(gate, up).Gated(gate, up, kind) is { } fused) return fused;   // one pass where the device has one
        var a = Apply(gate, kind);
        return Elementwise.Mul(a, up);
    }

    /// <summary>The host's one pass (<see cref="ApplyGatedInto"/>) where its preconditions hold, else null.</summary>
    internal static Tensor? HostGated(Tensor gate, Tensor up, ActivationKind kind)
    {
        if (gate.DType == up.DType && Shape.SequenceEqual(gate.Shape, up.Shape) && RowsOf(gate) >= 0 && RowsOf(up) >= 0
            && gate.DType is DType.Float32 or DType.BFloat16 && gate.Rank > 0)
        {
            var output = Tensor.Zeros(gate.DType, gate.ShapeArray);
            ApplyGatedInto(gate, up, kind, output);
            return output;
        }
        return null;
    }

    /// <summary>
    /// act(gate) * up in one pass over each row, on the host (SiLU-and-mul, GELU-and-mul, ...):
    /// <code>output[r] = round(round(act(gate[r])) * up[r])</code>
    /// the arithmetic of <see cref="Apply"/> then <c>Elementwise.Mul</c> (HF's <c>act_fn(gate_proj(x)) * up_proj(x)</c>: two
    /// torch ops, two roundings). Shapes: gate, up [rows, d] with contiguous rows and any row stride (e.g. the two halves of
    /// a fused gate_up output), or contiguous of any rank; output the same shape, contiguous. float32 or bfloat16, one dtype.
    /// </summary>
    public static void ApplyGatedInto(Tensor gate, Tensor up, ActivationKind kind, Tensor output)
    {
        int rg = RowsOf(gate), ru = RowsOf(up);
        if (!OpBackend.OnHost(gate, up, output) || gate.DType != up.DType || gate.DType != output.DType
            || gate.DType is not (DType.Float32 or DType.BFloat16) || rg < 0 || ru < 0 || gate.Rank == 0
            || !Shape.SequenceEqual(gate.Shape, up.Shape) || !Shape.SequenceEqual(gate.Shape, output.Shape) || !output.IsContiguous)
            throw new ArgumentException(
                $"gated {Name(kind)}: gate {Shape.Format(gate.Shape)} {gate.DType.TorchName()}, up {Shape.Format(up.Shape)} {up.DType.TorchName()}, " +
                $"output {Shape.Format(output.Shape)} {output.DType.TorchName()}: host float32/bfloat16 tensors of one shape with contiguous rows, " +
                "the output contiguous");
        int d = gate.Size(-1), rows = d == 0 ? 0 : gate.NumEl / d;
        var args = new GatedArgs(gate, up, output, kind, d, RowStride(gate), RowStride(up));
        if (Runtime.ComputeSettings.Threads <= 1 || rows < 2 || (long)rows * d < K.RowParallel.MinParallelElements)
            for (int r = 0; r < rows; r++) GatedRow(args, r);
        else GatedRows(args, rows);
    }

    private readonly record struct GatedArgs(Tensor Gate, Tensor Up, Tensor Output, ActivationKind Kind, int D, int GateStride, int UpStride);

    private static void GatedRows(GatedArgs a, int rows) =>
        K.RowParallel.For(rows, a.D, Runtime.ComputeSettings.Threads, r => GatedRow(a, r));

    [ThreadStatic] private static float[]? _gatedScratch;

    private static void GatedRow(GatedArgs a, int r)
    {
        int d = a.D;
        var scratch = _gatedScratch is { } s0 && s0.Length >= 3 * d ? s0 : _gatedScratch = new float[Math.Max(3 * d, 4096)];
        var g = scratch.AsSpan(0, d);
        var act = scratch.AsSpan(d, d);
        var u = scratch.AsSpan(2 * d, d);
        var dt = a.Gate.DType;
        Attention.Load(a.Gate, a.Gate.Offset + r * a.GateStride, g);
        K.Activations.Apply(a.Kind, g, act, dt);
        K.Rounding.InPlace(act, dt);
        Attention.Load(a.Up, a.Up.Offset + r * a.UpStride, u);
        System.Numerics.Tensors.TensorPrimitives.Multiply(act, u, act);
        Attention.Store(act, a.Output, a.Output.Offset + r * d);
    }

    // Rows of a tensor whose rows (last dim) are contiguous and evenly strided: contiguous of any rank, or 2D with last
    // stride 1 (a column slice); -1 otherwise.
    private static int RowsOf(Tensor t) =>
        t.Rank == 0 ? -1 : t.IsContiguous ? (t.Size(-1) == 0 ? 0 : t.NumEl / t.Size(-1)) : t.Rank == 2 && t.Stride(1) == 1 ? t.Shape[0] : -1;

    private static int RowStride(Tensor t) => t.Rank >= 2 && !t.IsContiguous ? t.Stride(0) : t.Size(-1);
}

/// <summary>The host's activations: float32 kernels (<see cref="K.Activations"/>), rounded once (gelu_new per op).</summary>
internal sealed partial class HostOps
{
    public Tensor Activation(Tensor x, ActivationKind kind)
    {
        var f = OpSupport.Float32Contiguous(x);
        var y = Tensor.Zeros(DType.Float32, x.ShapeArray);
        K.Activations.Apply(kind, f.Span<float>(), y.Span<float>(), x.DType);
        return OpSupport.FromFloat32(y, x.DType);
    }

    // the fused host pass for host float32/bfloat16 operands of one dtype and shape with contiguous rows
    public Tensor? Gated(Tensor gate, Tensor up, ActivationKind kind) => Ops.Activation.HostGated(gate, up, kind);
}
