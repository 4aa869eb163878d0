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

    public static void ApplyRow(ReadOnlySpan<float> q, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, Span<float> y,
        Tensors.DType dtype)
    {
        int d = q.Length, half = d / 2;
        for (int j = 0; j < d; j++)
        {
            float rh = j < half ? -q[j + half] : q[j - half];
            float a = Rounding.To(q[j] * cos[j], dtype);
            float b = Rounding.To(rh * sin[j], dtype);
            y[j] = a + b; // final rounding by the caller
        }
    }
}
