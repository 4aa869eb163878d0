using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels;

/// <summary>Rounds float32 values to a narrower float dtype and back (what `t.to(dtype).float()` gives).</summary>
public static class Rounding
{
    public static float To(float v, DType dtype) => dtype switch
    {
        DType.BFloat16 => BFloat16.Round(v),
        DType.Float16 => (float)(Half)v,
        _ => v,
    };

    public static void InPlace(Span<float> x, DType dtype)
    {
        if (dtype == DType.BFloat16) BFloat16.RoundInPlace(x);
        else if (dtype == DType.Float16) for (int i = 0; i < x.Length; i++) x[i] = (float)(Half)x[i];
    }
}
