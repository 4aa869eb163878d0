using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Tensors;

/// <summary>float32 -> bfloat16 is bit-exact with torch's `.to(torch.bfloat16)`: nearest, ties to even, NaN -> 0x7FC0.</summary>
public class BFloat16RoundingTests
{
    // Pairs recorded from torch 2.14.1: torch.tensor([f]).to(torch.bfloat16).view(torch.int16)
    [Theory]
    [InlineData(0x3F800000u, 0x3F80)] // 1.0 exact
    [InlineData(0x3F808000u, 0x3F80)] // tie, even below: down
    [InlineData(0x3F818000u, 0x3F82)] // tie, odd below: up
    [InlineData(0x3F808001u, 0x3F81)] // just above the tie: up
    [InlineData(0x3F80FFFFu, 0x3F81)]
    [InlineData(0x7F7FFFFFu, 0x7F80)] // float max rounds to +inf
    [InlineData(0x7F7F8000u, 0x7F80)] // tie at the top, odd: up to +inf
    [InlineData(0x7F7F7FFFu, 0x7F7F)]
    [InlineData(0x00000001u, 0x0000)] // smallest denormal flushes by rounding
    [InlineData(0x00008000u, 0x0000)] // denormal tie, even: down
    [InlineData(0x00018000u, 0x0002)] // denormal tie, odd: up
    [InlineData(0x80000000u, 0x8000)] // -0 keeps its sign
    [InlineData(0x7F800000u, 0x7F80)] // +inf
    [InlineData(0xFF800000u, 0xFF80)] // -inf
    [InlineData(0x7FC00001u, 0x7FC0)] // NaN payload dropped
    [InlineData(0xFFFFFFFFu, 0x7FC0)] // negative NaN becomes the positive quiet NaN
    [InlineData(0xC0490FDBu, 0xC049)] // -pi
    [InlineData(0x3EAAAAABu, 0x3EAB)] // 1/3
    public void Float32_to_bfloat16_matches_torch_bit_patterns(uint floatBits, int expected)
    {
        float f = BitConverter.UInt32BitsToSingle(floatBits);
        Assert.Equal((ushort)expected, BFloat16.FromFloat(f));
        var t = Tensor.FromArray([f, f], 2).To(DType.BFloat16);
        Assert.Equal([(ushort)expected, (ushort)expected], t.ToBFloat16Bits());
    }

    [Fact]
    public void Every_bfloat16_value_survives_a_round_trip_through_float32()
    {
        for (int bits = 0; bits <= 0xFFFF; bits++)
        {
            float f = BFloat16.ToFloat((ushort)bits);
            if (float.IsNaN(f)) continue;
            Assert.Equal((ushort)bits, BFloat16.FromFloat(f));
        }
    }

    [Fact]
    public void Random_float32_values_round_to_the_nearest_bfloat16_neighbour()
    {
        var rng = new SplitMix64(7);
        for (int i = 0; i < 200_000; i++)
        {
            uint bits = (uint)rng.Next();
            float f = BitConverter.UInt32BitsToSingle(bits);
            if (!float.IsFinite(f)) continue;
            ushort r = BFloat16.FromFloat(f);
            ushort below = (ushort)(bits >> 16);
            double lo = BFloat16.ToFloat(below), hi = BFloat16.ToFloat((ushort)(below + 1));
            double dLo = Math.Abs(f - lo), dHi = Math.Abs(hi - f);
            ushort expected = dLo < dHi ? below : dHi < dLo ? (ushort)(below + 1) : (below & 1) == 0 ? below : (ushort)(below + 1);
            if (float.IsInfinity(BFloat16.ToFloat(expected)) || double.IsInfinity(hi)) continue;
            Assert.True(expected == r, $"0x{bits:X8} ({f}) rounded to 0x{r:X4}, nearest-even is 0x{expected:X4}");
        }
    }

    [Fact]
    public void Float16_conversion_is_ieee_nearest_even_like_torch_half()
    {
        var t = Tensor.FromArray([1.0f, 1.00048828125f, 1.00146484375f, 65520f, 6e-8f], 5).To(DType.Float16);
        var back = t.ToFloatArray();
        Assert.Equal([1.0f, 1.0f, 1.001953125f, float.PositiveInfinity, 5.9604645e-08f], back);
    }
}
