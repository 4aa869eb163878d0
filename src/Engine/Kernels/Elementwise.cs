using System.Numerics.Tensors;

namespace Harness.Engine.Kernels;

public enum BinaryOp { Add, Sub, Mul, Div, Maximum, Minimum }

public enum UnaryOp { Neg, Abs, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Square, Reciprocal }

/// <summary>
/// Element-wise float32 kernels. Operands are given as (span starting at the first element, element stride);
/// stride 1 runs on TensorPrimitives, stride 0 (a broadcast operand) uses the span-scalar overloads,
/// anything else a plain loop. All of + - * / are single IEEE roundings, so every path gives the same bits.
/// </summary>
public static class Elementwise
{
    public static void Binary(BinaryOp op, ReadOnlySpan<float> a, int strideA, ReadOnlySpan<float> b, int strideB, Span<float> dst)
    {
        int n = dst.Length;
        if (n == 0) return;
        if (strideA == 1 && strideB == 1)
        {
            a = a[..n]; b = b[..n];
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(a, b, dst); return;
                case BinaryOp.Sub: TensorPrimitives.Subtract(a, b, dst); return;
                case BinaryOp.Mul: TensorPrimitives.Multiply(a, b, dst); return;
                case BinaryOp.Div: TensorPrimitives.Divide(a, b, dst); return;
            }
        }
        else if (strideA == 1 && strideB == 0)
        {
            a = a[..n];
            float s = b[0];
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(a, s, dst); return;
                case BinaryOp.Sub: TensorPrimitives.Subtract(a, s, dst); return;
                case BinaryOp.Mul: TensorPrimitives.Multiply(a, s, dst); return;
                case BinaryOp.Div: TensorPrimitives.Divide(a, s, dst); return;
            }
        }
        else if (strideA == 0 && strideB == 1)
        {
            b = b[..n];
            float s = a[0];
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(b, s, dst); return;
                case BinaryOp.Sub: TensorPrimitives.Subtract(s, b, dst); return;
                case BinaryOp.Mul: TensorPrimitives.Multiply(b, s, dst); return;
                case BinaryOp.Div: TensorPrimitives.Divide(s, b, dst); return;
            }
        }
        for (int i = 0, ia = 0, ib = 0; i < n; i++, ia += strideA, ib += strideB)
            dst[i] = Apply(op, a[ia], b[ib]);
    }

    public static float Apply(BinaryOp op, float x, float y) => op switch
    {
        BinaryOp.Add => x + y,
        BinaryOp.Sub => x - y,
        BinaryOp.Mul => x * y,
        BinaryOp.Div => x / y,
        // torch.maximum/minimum propagate NaN
        BinaryOp.Maximum => float.IsNaN(x) || float.IsNaN(y) ? float.NaN : Math.Max(x, y),
        BinaryOp.Minimum => float.IsNaN(x) || float.IsNaN(y) ? float.NaN : Math.Min(x, y),
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    /// <summary>Contiguous unary op; x and y may be the same span.</summary>
    public static void Unary(UnaryOp op, ReadOnlySpan<float> x, Span<float> y)
    {
        switch (op)
        {
            case UnaryOp.Neg: TensorPrimitives.Negate(x, y); break;
            case UnaryOp.Abs: TensorPrimitives.Abs(x, y); break;
            case UnaryOp.Exp: TensorPrimitives.Exp(x, y); break;
            case UnaryOp.Log: TensorPrimitives.Log(x, y); break;
            case UnaryOp.Sqrt: TensorPrimitives.Sqrt(x, y); break;
            // torch's CPU rsqrt is 1 / sqrt(x): two roundings
            case UnaryOp.Rsqrt: TensorPrimitives.Sqrt(x, y); TensorPrimitives.Reciprocal(y, y); break;
            case UnaryOp.Tanh: TensorPrimitives.Tanh(x, y); break;
            case UnaryOp.Sigmoid: Sigmoid(x, y); break;
            case UnaryOp.Square: TensorPrimitives.Multiply(x, x, y); break;
            case UnaryOp.Reciprocal: TensorPrimitives.Reciprocal(x, y); break;
            default: throw new ArgumentOutOfRangeException(nameof(op));
        }
    }

    /// <summary>torch's CPU sigmoid: 1 / (1 + exp(-x)).</summary>
    public static void Sigmoid(ReadOnlySpan<float> x, Span<float> y)
    {
        TensorPrimitives.Negate(x, y);
        TensorPrimitives.Exp(y, y);
        TensorPrimitives.Add(y, 1f, y);
        TensorPrimitives.Reciprocal(y, y);
    }

    /// <summary>
    /// torch's pow(tensor, scalar) on CPU special-cases exponents: 2 -> x*x, 3 -> x*x*x, 0.5 -> sqrt, -0.5 -> 1/sqrt,
    /// -1 -> 1/x, -2 -> 1/(x*x); any other exponent is powf (here pow in double rounded once).
    /// </summary>
    public static void PowScalar(ReadOnlySpan<float> x, double exponent, Span<float> y)
    {
        switch (exponent)
        {
            case 1.0: x.CopyTo(y); return;
            case 2.0: TensorPrimitives.Multiply(x, x, y); return;
            case 3.0:
                for (int i = 0; i < x.Length; i++) { float v = x[i]; y[i] = v * v * v; }
                return;
            case 0.5: TensorPrimitives.Sqrt(x, y); return;
            case -0.5: TensorPrimitives.Sqrt(x, y); TensorPrimitives.Reciprocal(y, y); return;
            case -1.0: TensorPrimitives.Reciprocal(x, y); return;
            case -2.0: TensorPrimitives.Multiply(x, x, y); TensorPrimitives.Reciprocal(y, y); return;
        }
        float e = (float)exponent;
        for (int i = 0; i < x.Length; i++) y[i] = (float)Math.Pow(x[i], e);
    }

    /// <summary>torch.clamp: min(max(x, lo), hi), NaN stays NaN; a missing bound is skipped.</summary>
    public static void Clamp(ReadOnlySpan<float> x, float? lo, float? hi, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++)
        {
            float v = x[i];
            if (!float.IsNaN(v))
            {
                if (lo is float l && v < l) v = l;
                if (hi is float h && v > h) v = h;
            }
            y[i] = v;
        }
    }
}
