using System.Numerics.Tensors;
using Harness.Engine.Kernels;
using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// Element-wise ops with torch broadcasting. Float dtypes only for arithmetic (an integer/bool operand is widened);
/// bf16/fp16 are computed in float32 and rounded once per op. Output dtype = input dtype; two different float dtypes
/// are an error unless one operand is a 0-dim scalar. Contiguous operands run on TensorPrimitives; strided and
/// broadcast ones through a row walker (a stride-0 operand uses the span-scalar kernels).
/// </summary>
public static class Elementwise
{
    public static Tensor Add(Tensor a, Tensor b) => Binary(BinaryOp.Add, a, b, "add");
    public static Tensor Sub(Tensor a, Tensor b) => Binary(BinaryOp.Sub, a, b, "sub");
    public static Tensor Mul(Tensor a, Tensor b) => Binary(BinaryOp.Mul, a, b, "mul");
    public static Tensor Div(Tensor a, Tensor b) => Binary(BinaryOp.Div, a, b, "div");
    /// <summary>torch.maximum / torch.minimum (NaN propagates).</summary>
    public static Tensor Maximum(Tensor a, Tensor b) => Binary(BinaryOp.Maximum, a, b, "maximum");
    public static Tensor Minimum(Tensor a, Tensor b) => Binary(BinaryOp.Minimum, a, b, "minimum");

    /// <summary>Tensor-scalar ops: the scalar is cast to float32 (torch's opmath), the op runs in float32.</summary>
    public static Tensor Add(Tensor a, double s) => Scalar(BinaryOp.Add, a, (float)s, "add");
    public static Tensor Sub(Tensor a, double s) => Scalar(BinaryOp.Sub, a, (float)s, "sub");
    public static Tensor Mul(Tensor a, double s) => Scalar(BinaryOp.Mul, a, (float)s, "mul");

    /// <summary>
    /// a / s. For bf16/fp16 torch's CPU div_true_kernel multiplies by the float reciprocal of a scalar divisor
    /// (x * (1/s)); float32 divides. Both are reproduced.
    /// </summary>
    public static Tensor Div(Tensor a, double s)
    {
        if (a.DType is DType.BFloat16 or DType.Float16) return Scalar(BinaryOp.Mul, a, 1f / (float)s, "div");
        return Scalar(BinaryOp.Div, a, (float)s, "div");
    }

    public static Tensor Neg(Tensor x) => Unary(UnaryOp.Neg, x, "neg");
    public static Tensor Abs(Tensor x) => Unary(UnaryOp.Abs, x, "abs");
    public static Tensor Exp(Tensor x) => Unary(UnaryOp.Exp, x, "exp");
    public static Tensor Log(Tensor x) => Unary(UnaryOp.Log, x, "log");
    public static Tensor Sqrt(Tensor x) => Unary(UnaryOp.Sqrt, x, "sqrt");
    /// <summary>1 / sqrt(x), two roundings, as torch's CPU rsqrt.</summary>
    public static Tensor Rsqrt(Tensor x) => Unary(UnaryOp.Rsqrt, x, "rsqrt");
    public static Tensor Tanh(Tensor x) => Unary(UnaryOp.Tanh, x, "tanh");
    /// <summary>1 / (1 + exp(-x)).</summary>
    public static Tensor Sigmoid(Tensor x) => Unary(UnaryOp.Sigmoid, x, "sigmoid");
    public static Tensor Square(Tensor x) => Unary(UnaryOp.Square, x, "square");
    public static Tensor Reciprocal(Tensor x) => Unary(UnaryOp.Reciprocal, x, "reciprocal");

    /// <summary>x ** exponent with torch's special cases (2: x*x, 3: x*x*x, 0.5: sqrt, -0.5: 1/sqrt, -1: 1/x, -2: 1/(x*x)).</summary>
    public static Tensor Pow(Tensor x, double exponent)
    {
        OpSupport.RequireFloat(x, "pow");
        return OpBackend.Of(x).Pow(x, exponent);
    }

    /// <summary>torch.clamp(x, min, max); either bound may be null; bounds are rounded to x's dtype first, as torch does.</summary>
    public static Tensor Clamp(Tensor x, double? min = null, double? max = null)
    {
        OpSupport.RequireFloat(x, "clamp");
        if (min is null && max is null) throw new ArgumentException("torch.clamp: At least one of 'min' or 'max' must not be None");
        float? lo = min is double l ? Rounding.To((float)l, x.DType) : null;
        float? hi = max is double h ? Rounding.To((float)h, x.DType) : null;
        return OpBackend.Of(x).Clamp(x, lo, hi);                     // no buffer before the backend: a device needs no host one
    }

    /// <summary>torch.where(mask, a, b) with three-way broadcasting; mask must be bool.</summary>
    public static Tensor Where(Tensor mask, Tensor a, Tensor b)
    {
        if (mask.DType != DType.Bool)
            throw new ArgumentException($"where expected condition to be a boolean tensor, but got a tensor with dtype {mask.DType.TorchName()}");
        var dt = OpSupport.ResultType(a, b, "where");
        return OpBackend.Of(mask, a, b).Where(mask, a, b, dt);
    }

    public static Tensor Where(Tensor mask, Tensor a, double b) => Where(mask, a, Tensor.Scalar(b));

    public static Tensor Eq(Tensor a, Tensor b) => Compare(a, b, (x, y) => x == y);
    public static Tensor Ne(Tensor a, Tensor b) => Compare(a, b, (x, y) => x != y);
    public static Tensor Gt(Tensor a, Tensor b) => Compare(a, b, (x, y) => x > y);
    public static Tensor Ge(Tensor a, Tensor b) => Compare(a, b, (x, y) => x >= y);
    public static Tensor Lt(Tensor a, Tensor b) => Compare(a, b, (x, y) => x < y);
    public static Tensor Le(Tensor a, Tensor b) => Compare(a, b, (x, y) => x <= y);
    public static Tensor Eq(Tensor a, double s) => Compare(a, ScalarLike(a, s), (x, y) => x == y);
    public static Tensor Gt(Tensor a, double s) => Compare(a, ScalarLike(a, s), (x, y) => x > y);
    public static Tensor Lt(Tensor a, double s) => Compare(a, ScalarLike(a, s), (x, y) => x < y);

    /// <summary>dst += src in place (src broadcast to dst's shape; computed in float32, rounded once into dst's dtype).</summary>
    public static void AddInPlace(Tensor dst, Tensor src)
    {
        OpSupport.RequireFloat(dst, "add_");
        OpSupport.RequireFloat(src, "add_");
        var shape = Shape.Broadcast(dst.Shape, src.Shape);
        if (!Shape.SequenceEqual(shape, dst.Shape))
            throw new ArgumentException(
                $"output with shape {Shape.Format(dst.Shape)} doesn't match the broadcast shape {Shape.Format(shape)}");
        OpBackend.Of(dst, src).AddInPlace(dst, src);
    }

    private static Tensor ScalarLike(Tensor a, double s) =>
        a.DType.IsFloatingPoint() ? Tensor.Scalar(s, DType.Float32) : Tensor.Scalar(s, DType.Int64);

    private static Tensor Binary(BinaryOp op, Tensor a, Tensor b, string name)
    {
        var dt = OpSupport.ResultType(a, b, name);
        return OpBackend.Of(a, b).Binary(op, a, b, dt, name);
    }

    private static Tensor Scalar(BinaryOp op, Tensor a, float s, string name)
    {
        OpSupport.RequireFloat(a, name);
        return OpBackend.Of(a).Scalar(op, a, s, name);
    }

    private static Tensor Unary(UnaryOp op, Tensor x, string name)
    {
        OpSupport.RequireFloat(x, name);
        return OpBackend.Of(x).Unary(op, x, name);
    }

    /// <summary>Comparisons read every dtype exactly as double (integers up to 2^53), broadcast, and return bool.</summary>
    private static Tensor Compare(Tensor a, Tensor b, Func<double, double, bool> cmp) => OpBackend.Of(a, b).Compare(a, b, cmp);
}

/// <summary>The host's element-wise ops: float32 over TensorPrimitives (contiguous) or a row walker (strided, broadcast).</summary>
internal sealed partial class HostOps
{
    public Tensor Pow(Tensor x, double exponent)
    {
        var f = OpSupport.Float32Contiguous(x);
        var y = Tensor.Zeros(DType.Float32, x.ShapeArray);
        K.Elementwise.PowScalar(f.Span<float>(), exponent, y.Span<float>());
        return OpSupport.FromFloat32(y, x.DType);
    }

    public Tensor Clamp(Tensor x, float? lo, float? hi)
    {
        var f = OpSupport.Float32Contiguous(x);
        var y = Tensor.Zeros(DType.Float32, x.ShapeArray);
        K.Elementwise.Clamp(f.Span<float>(), lo, hi, y.Span<float>());
        return OpSupport.FromFloat32(y, x.DType);
    }

    public Tensor Where(Tensor mask, Tensor a, Tensor b, DType dt)
    {
        var shape = OpSupport.Broadcast(mask, a, b);
        var m = mask.Expand(shape);
        var fa = OpSupport.Float32(a).Expand(shape);
        var fb = OpSupport.Float32(b).Expand(shape);
        var y = Tensor.Zeros(DType.Float32, shape);
        var dst = y.Span<float>();
        var w = new RowWalker(shape, m, fa, fb);
        var ms = m.Storage.Bytes; var sa = fa.StorageSpan<float>(); var sb = fb.StorageSpan<float>();
        int n = w.RowLength;
        for (int r = 0; r < w.Rows; r++, w.Next())
        {
            int om = w.Offsets[0], oa = w.Offsets[1], ob = w.Offsets[2];
            for (int i = 0; i < n; i++, om += w.InnerStrides[0], oa += w.InnerStrides[1], ob += w.InnerStrides[2])
                dst[r * n + i] = ms[om] != 0 ? sa[oa] : sb[ob];
        }
        return OpSupport.FromFloat32(y, dt);
    }

    public void AddInPlace(Tensor dst, Tensor src)
    {
        if (dst.DType == DType.Float32 && src.DType == DType.Float32 && dst.IsContiguous && src.IsContiguous
            && Shape.SequenceEqual(src.Shape, dst.Shape))
        {
            var d = dst.Span<float>();
            TensorPrimitives.Add(d, src.Span<float>(), d);
            return;
        }
        var sum = Tensor.Zeros(DType.Float32, dst.ShapeArray);
        BinaryInto(BinaryOp.Add, OpSupport.Float32(dst), OpSupport.Float32(src).Expand(dst.ShapeArray), sum);
        dst.CopyFrom(sum);
    }

    public Tensor Binary(BinaryOp op, Tensor a, Tensor b, DType dt, string name)
    {
        var shape = Shape.Broadcast(a.Shape, b.Shape);
        var y = Tensor.Zeros(DType.Float32, shape);
        BinaryInto(op, OpSupport.Float32(a).Expand(shape), OpSupport.Float32(b).Expand(shape), y);
        return OpSupport.FromFloat32(y, dt);
    }

    /// <summary>dst (contiguous float32) = a op b, with a and b float32 views already of dst's shape.</summary>
    private static void BinaryInto(BinaryOp op, Tensor a, Tensor b, Tensor dst)
    {
        var d = dst.Span<float>();
        if (a.IsContiguous && b.IsContiguous)
        {
            K.Elementwise.Binary(op, a.Span<float>(), 1, b.Span<float>(), 1, d);
            return;
        }
        var w = new RowWalker(dst.ShapeArray, a, b);
        var sa = a.StorageSpan<float>();
        var sb = b.StorageSpan<float>();
        int n = w.RowLength;
        for (int r = 0; r < w.Rows; r++, w.Next())
            K.Elementwise.Binary(op, sa[w.Offsets[0]..], w.InnerStrides[0], sb[w.Offsets[1]..], w.InnerStrides[1], d.Slice(r * n, n));
    }

    public Tensor Scalar(BinaryOp op, Tensor a, float s, string name)
    {
        if (Bf16Chunked(a, (x, y) => K.Elementwise.Binary(op, x, 1, [s], 0, y)) is { } chunked) return chunked;
        var f = OpSupport.Float32Contiguous(a);
        var y = Tensor.Zeros(DType.Float32, a.ShapeArray);
        ReadOnlySpan<float> sv = [s];
        K.Elementwise.Binary(op, f.Span<float>(), 1, sv, 0, y.Span<float>());
        return OpSupport.FromFloat32(y, a.DType);
    }

    public Tensor Unary(UnaryOp op, Tensor x, string name)
    {
        if (Bf16Chunked(x, (a, y) => K.Elementwise.Unary(op, a, y)) is { } chunked) return chunked;
        var f = OpSupport.Float32Contiguous(x);
        var y = Tensor.Zeros(DType.Float32, x.ShapeArray);
        K.Elementwise.Unary(op, f.Span<float>(), y.Span<float>());
        return OpSupport.FromFloat32(y, x.DType);
    }

    /// <summary>Elements a chunk of <see cref="Bf16Chunked"/> widens at a time: a multiple of 256 (the tanh kernel's own
    /// chunk) so every element meets the same kernel path as in one pass over the whole tensor.</summary>
    internal const int Bf16Chunk = 1 << 16;

    /// <summary>
    /// A contiguous bf16 tensor's element-wise op (<paramref name="f32Op"/> over float32 spans) without float32 copies of the
    /// whole tensor: chunks of <see cref="Bf16Chunk"/> elements are widened into a reused buffer, computed and rounded
    /// (nearest-even) into the bf16 result, the same bits as widening, computing and rounding the whole tensor at once (the
    /// chunk boundaries are multiples of 256 and the remainder joins the last chunk, so no chunk is a short tail the whole
    /// pass did not have). Gemma3n's soft cap over [261, 262400] bf16 logits made 685 MB of float32 and bf16 arrays per op
    /// and rank (notes/issue-22-hostmem.md). Null where it does not apply (other dtypes, strided, small: the whole-tensor path).
    /// </summary>
    private static Tensor? Bf16Chunked(Tensor x, F32Op f32Op)
    {
        if (x.DType != DType.BFloat16 || !x.IsContiguous || x.NumEl < 2 * Bf16Chunk) return null;
        var y = Tensor.Zeros(DType.BFloat16, x.ShapeArray);
        var src = x.Span<ushort>();
        var dst = y.Span<ushort>();
        int n = src.Length, chunks = n / Bf16Chunk;
        var a = new float[2 * Bf16Chunk];
        var b = new float[2 * Bf16Chunk];
        for (int c = 0; c < chunks; c++)
        {
            int start = c * Bf16Chunk, len = c == chunks - 1 ? n - start : Bf16Chunk;   // [Bf16Chunk, 2 Bf16Chunk)
            var fa = a.AsSpan(0, len);
            var fb = b.AsSpan(0, len);
            BFloat16.ToFloat(src.Slice(start, len), fa);
            f32Op(fa, fb);
            BFloat16.FromFloat(fb, dst.Slice(start, len));
        }
        return y;
    }

    private delegate void F32Op(ReadOnlySpan<float> x, Span<float> y);

    public Tensor Compare(Tensor a, Tensor b, Func<double, double, bool> cmp)
    {
        var shape = Shape.Broadcast(a.Shape, b.Shape);
        var ea = a.Expand(shape);
        var eb = b.Expand(shape);
        var y = Tensor.Zeros(DType.Bool, shape);
        var dst = y.Storage.Bytes;
        var w = new RowWalker(shape, ea, eb);
        int n = w.RowLength;
        for (int r = 0; r < w.Rows; r++, w.Next())
        {
            int oa = w.Offsets[0], ob = w.Offsets[1];
            for (int i = 0; i < n; i++, oa += w.InnerStrides[0], ob += w.InnerStrides[1])
                dst[r * n + i] = cmp(ea.ReadAsDouble(oa), eb.ReadAsDouble(ob)) ? (byte)1 : (byte)0;
        }
        return y;
    }
}
