using Harness.Engine.Tensors;

namespace Harness.Engine.Ops;

/// <summary>Shared plumbing for the tensor-level ops: dtype rules, float32 widening, row iteration.</summary>
internal static class OpSupport
{
    /// <summary>The tensor as float32 (a contiguous copy unless it already is float32).</summary>
    public static Tensor Float32(Tensor t) => t.DType == DType.Float32 ? t : t.To(DType.Float32);

    public static Tensor Float32Contiguous(Tensor t) => Float32(t).Contiguous();

    /// <summary>Rounds a float32 result to the op's output dtype once (bf16: nearest-even).</summary>
    public static Tensor FromFloat32(Tensor f, DType dtype) => dtype == DType.Float32 ? f : f.To(dtype);

    public static void RequireFloat(Tensor t, string op)
    {
        if (!t.DType.IsFloatingPoint())
            throw new ArgumentException($"{op}: expected a floating-point tensor (float32, bfloat16, float16), got {t.DType.TorchName()} of shape {Shape.Format(t.Shape)}");
    }

    /// <summary>
    /// Output dtype of a binary float op: equal float dtypes give that dtype; a float and an integer/bool tensor give the float;
    /// two different float dtypes are an error unless one is a 0-dim scalar (then the other one's dtype wins, as in torch).
    /// </summary>
    public static DType ResultType(Tensor a, Tensor b, string op)
    {
        bool fa = a.DType.IsFloatingPoint(), fb = b.DType.IsFloatingPoint();
        if (fa && fb)
        {
            if (a.DType == b.DType) return a.DType;
            if (a.Rank == 0 && b.Rank != 0) return b.DType;
            if (b.Rank == 0 && a.Rank != 0) return a.DType;
            throw new ArgumentException(
                $"{op}: mixed float dtypes {a.DType.TorchName()} (shape {Shape.Format(a.Shape)}) and {b.DType.TorchName()} (shape {Shape.Format(b.Shape)}); convert one with To() first");
        }
        if (fa) return a.DType;
        if (fb) return b.DType;
        throw new ArgumentException(
            $"{op}: supports floating-point tensors; got {a.DType.TorchName()} and {b.DType.TorchName()}");
    }

    /// <summary>A 0-dim tensor as shape [1] (Tensor.Reshape(1) of a 0-dim tensor currently fails in ComputeViewStrides).</summary>
    public static Tensor As1D(Tensor t) => t.Rank == 0 ? new Tensor(t.Storage, t.DType, [1], [1], t.Offset) : t;

    public static int[] Broadcast(params Tensor[] ts)
    {
        int[] shape = ts[0].ShapeArray;
        for (int i = 1; i < ts.Length; i++) shape = Shape.Broadcast(shape, ts[i].Shape);
        return shape;
    }
}

/// <summary>
/// Walks the innermost rows of several tensors of one (broadcast) shape together: for each row, each operand's storage
/// offset of its first element; <see cref="InnerStrides"/> are the operands' last-dim strides (0 where broadcast).
/// </summary>
internal sealed class RowWalker
{
    private readonly int[] _shape;
    private readonly Tensor[] _ts;
    private readonly int[] _idx;

    public int[] Offsets { get; }
    public int[] InnerStrides { get; }
    public int RowLength { get; }
    public int Rows { get; }

    public RowWalker(int[] shape, params Tensor[] operands)
    {
        _shape = shape;
        _ts = operands;
        _idx = new int[Math.Max(shape.Length, 1)];
        Offsets = operands.Select(t => t.Offset).ToArray();
        long numel = Shape.NumEl(shape);
        RowLength = shape.Length == 0 ? 1 : shape[^1];
        Rows = RowLength == 0 ? 0 : (int)(numel / RowLength);
        InnerStrides = operands.Select(t => t.Rank == 0 ? 0 : t.Strides[^1]).ToArray();
    }

    public void Next()
    {
        for (int d = _shape.Length - 2; d >= 0; d--)
        {
            _idx[d]++;
            for (int k = 0; k < _ts.Length; k++) Offsets[k] += _ts[k].Strides[d];
            if (_idx[d] < _shape[d]) return;
            for (int k = 0; k < _ts.Length; k++) Offsets[k] -= _ts[k].Strides[d] * _shape[d];
            _idx[d] = 0;
        }
    }
}
