using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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

    /// <summary>Rounds each value (nearest even, NaN to 0x7FC0), 16 at a time with the scalar rule's integer arithmetic.</summary>
    public static void FromFloat(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= src.Length; i += 16)
            {
                var lo = RoundBits(Vector256.Create(src.Slice(i, 8))) >>> 16;
                var hi = RoundBits(Vector256.Create(src.Slice(i + 8, 8))) >>> 16;
                Vector256.Narrow(lo, hi).CopyTo(dst.Slice(i, 16));
            }
        for (; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }

    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= src.Length; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(src.Slice(i, 16)));
                (lo << 16).AsSingle().CopyTo(dst.Slice(i, 8));
                (hi << 16).AsSingle().CopyTo(dst.Slice(i + 8, 8));
            }
        for (; i < src.Length; i++) dst[i] = ToFloat(src[i]);
    }

    /// <summary>Rounds values to bfloat16 in place (what Round does to each), 8 at a time.</summary>
    public static void RoundInPlace(Span<float> x)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= x.Length; i += 8)
                Round(Vector256.Create(x.Slice(i, 8))).CopyTo(x.Slice(i, 8));
        for (; i < x.Length; i++) x[i] = Round(x[i]);
    }

    /// <summary>Each lane rounded to bf16 and widened back (what <see cref="Round(float)"/> does per lane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Round(Vector256<float> v) => (RoundBits(v) & Vector256.Create(0xFFFF0000u)).AsSingle();

    // bits + 0x7FFF + lsb (the scalar FromFloat before its shift), NaN lanes 0x7FC00000
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> RoundBits(Vector256<float> v)
    {
        var bits = v.AsUInt32();
        var rounded = bits + Vector256.Create(0x7FFFu) + ((bits >>> 16) & Vector256.Create(1u));
        var isNumber = Vector256.Equals(v, v).AsUInt32();
        return Vector256.ConditionalSelect(isNumber, rounded, Vector256.Create(0x7FC00000u));
    }
}
