using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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

    /// <summary>Element-wise <see cref="FromFloat(float)"/>, 16 lanes at a time (the same formula, so the same bits).</summary>
    public static void FromFloat(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float s = ref MemoryMarshal.GetReference(src);
            ref ushort d = ref MemoryMarshal.GetReference(dst);
            var bias = Vector256.Create(0x7FFFu);
            var one = Vector256.Create(1u);
            var nan = Vector256.Create(0x7FC0u);
            for (; i + 16 <= src.Length; i += 16)
            {
                var f0 = Vector256.LoadUnsafe(ref s, (nuint)i); var f1 = Vector256.LoadUnsafe(ref s, (nuint)i + 8);
                var b0 = f0.AsUInt32(); var b1 = f1.AsUInt32();
                var r0 = (b0 + bias + ((b0 >> 16) & one)) >> 16;
                var r1 = (b1 + bias + ((b1 >> 16) & one)) >> 16;
                r0 = Vector256.ConditionalSelect(Vector256.Equals(f0, f0).AsUInt32(), r0, nan);
                r1 = Vector256.ConditionalSelect(Vector256.Equals(f1, f1).AsUInt32(), r1, nan);
                Vector256.Narrow(r0, r1).StoreUnsafe(ref d, (nuint)i);
            }
        }
        for (; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }

    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref ushort s = ref MemoryMarshal.GetReference(src);
            ref float d = ref MemoryMarshal.GetReference(dst);
            for (; i + 16 <= src.Length; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref s, (nuint)i));
                (lo << 16).AsSingle().StoreUnsafe(ref d, (nuint)i);
                (hi << 16).AsSingle().StoreUnsafe(ref d, (nuint)i + 8);
            }
        }
        for (; i < src.Length; i++) dst[i] = ToFloat(src[i]);
    }
}
