using System.Runtime.Intrinsics;

namespace Harness.Engine.Kernels;

/// <summary>
/// Rotary embedding rows. rotate_half(q) = cat(-q[d/2:], q[:d/2]); HF's apply_rotary_pos_emb is
/// (q * cos) + (rotate_half(q) * sin) as three torch ops, each rounded to the dtype: r(r(q*cos) + r(rh*sin)).
/// </summary>
public static class Rotary
{
    public static void RotateHalf(ReadOnlySpan<float> q, Span<float> y)
    {
        int half = q.Length / 2;
        for (int j = 0; j < half; j++) { y[j] = -q[j + half]; y[j + half] = q[j]; }
    }

    /// <summary>
    /// y[j] = round(q[j] * cos[j]) + round(rotate_half(q)[j] * sin[j]), the products rounded to <paramref name="dtype"/>,
    /// the sum left for the caller to round. Eight lanes at a time where half the row is a multiple of 8 (float32 and
    /// bfloat16: the same two products and one add per lane, no FMA contraction, so the same bits as the scalar loop).
    /// </summary>
    public static void ApplyRow(ReadOnlySpan<float> q, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, Span<float> y,
        Tensors.DType dtype)
    {
        int d = q.Length, half = d / 2;
        if (Vector256.IsHardwareAccelerated && half % 8 == 0 && dtype is Tensors.DType.Float32 or Tensors.DType.BFloat16)
        {
            for (int j = 0; j < d; j += 8)
            {
                var rh = j < half ? -Vector256.Create(q.Slice(j + half, 8)) : Vector256.Create(q.Slice(j - half, 8));
                var a = Vector256.Create(q.Slice(j, 8)) * Vector256.Create(cos.Slice(j, 8));
                var b = rh * Vector256.Create(sin.Slice(j, 8));
                if (dtype == Tensors.DType.BFloat16) { a = Tensors.BFloat16.Round(a); b = Tensors.BFloat16.Round(b); }
                (a + b).CopyTo(y.Slice(j, 8));
            }
            return;
        }
        for (int j = 0; j < d; j++)
        {
            float rh = j < half ? -q[j + half] : q[j - half];
            float a = Rounding.To(q[j] * cos[j], dtype);
            float b = Rounding.To(rh * sin[j], dtype);
            y[j] = a + b; // final rounding by the caller
        }
    }
}
