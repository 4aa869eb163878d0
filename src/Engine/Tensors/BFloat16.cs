using System.Runtime.CompilerServices;

namespace Harness.Engine.Tensors;

/// <summary>
/// bfloat16 <-> float32 conversions, bit-exact with torch's c10::BFloat16:
/// float -> bf16 rounds to nearest, ties to even; every NaN becomes the quiet NaN 0x7FC0.
/// </summary>
public static class BFloat16
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return 0x7FC0;
        uint lsb = (bits >> 16) & 1u;
        uint rounding = 0x7FFFu + lsb;
        return (ushort)((bits + rounding) >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Rounds a float to the nearest bfloat16 value and widens it back: what `x.to(bf16).float()` gives.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Round(float value) => ToFloat(FromFloat(value));

    public static void FromFloat(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        for (int i = 0; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }

    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        for (int i = 0; i < src.Length; i++) dst[i] = ToFloat(src[i]);
    }
}
