using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Rotary embeddings' checks the offline catalog cannot make (every catalog model has a valid even head_dim, 1D/2D
/// position ids and attention_scaling 1): each test is a Stryker.NET mutant of src/Engine/Ops/Rotary.cs that survived
/// the catalog (notes/issue-21-mutation.md lists them), written as the bug report it guards.
/// </summary>
public class RotaryMutationTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(-2)]
    [InlineData(7)]
    public void A_rotary_dim_that_is_zero_negative_or_odd_is_refused_with_the_dim(int dim)
    {
        // mutants: `dim <= 0 || dim % 2 != 0` as `&&` or `dim < 0` (a zero or odd head_dim * partial_rotary_factor
        // went on to build a table of the wrong width), the throw removed, its message emptied
        var ex = Assert.Throws<ArgumentException>(() => Rotary.InvFreq(10000.0, dim));
        Assert.Equal($"rotary dim must be positive and even, got {dim}", ex.Message);
    }

    [Fact]
    public void Cos_and_sin_are_multiplied_by_the_attention_scaling_not_divided()
    {
        // mutants: `cos(f) * scale` and `sin(f) * scale` as `/ scale` (every model passes 1, where both agree)
        var inv = Rotary.InvFreq(10000.0, 8);
        var pos = Tensor.FromArray(new long[] { 0, 1, 5, 40 }, 4);
        var (cos1, sin1) = Rotary.CosSin(inv, pos, DType.Float32);
        var (cosHalf, sinHalf) = Rotary.CosSin(inv, pos, DType.Float32, attentionScaling: 0.5);
        // x * 0.5 is exact in float32, so the scaled tables are the unscaled ones halved, bit for bit
        Assert.True(cosHalf.BitwiseEquals(Elementwise.Mul(cos1, 0.5)), "cos * attention_scaling");
        Assert.True(sinHalf.BitwiseEquals(Elementwise.Mul(sin1, 0.5)), "sin * attention_scaling");
    }

    [Fact]
    public void Position_ids_of_rank_3_are_refused_with_their_shape()
    {
        var inv = Rotary.InvFreq(10000.0, 8);
        var ex = Assert.Throws<ArgumentException>(() => Rotary.CosSin(inv, Tensor.FromArray(new long[] { 0, 1, 2 }, 1, 1, 3), DType.Float32));
        Assert.Equal("position_ids must be [batch, seq] or [seq], got [1, 1, 3]", ex.Message);
    }

    [Fact]
    public void Rotate_half_moves_every_row_of_a_rank_3_tensor_and_refuses_odd_or_integer_input()
    {
        // mutants: the row loop's bound/step/offsets, Math.Max as Math.Min, x.Size(-1) as x.Size(1) (a rank-3 input has
        // Size(1) != Size(-1)), the even-dim check and its message, RequireFloat removed or its op name emptied
        var x = Tensor.FromArray(Enumerable.Range(1, 24).Select(i => (float)i).ToArray(), 2, 3, 4);
        var got = Rotary.RotateHalf(x).ToDoubleArray();
        var want = new double[24];
        for (int r = 0; r < 6; r++)
        {
            double a = 4 * r + 1, b = 4 * r + 2, c = 4 * r + 3, d = 4 * r + 4;
            (want[4 * r], want[4 * r + 1], want[4 * r + 2], want[4 * r + 3]) = (-c, -d, a, b);
        }
        Assert.Equal(want, got);
        var odd = Assert.Throws<ArgumentException>(() => Rotary.RotateHalf(Tensor.Zeros(DType.Float32, 2, 3)));
        Assert.Equal("rotate_half: last dim must be even, got shape [2, 3]", odd.Message);
        var ints = Assert.Throws<ArgumentException>(() => Rotary.RotateHalf(Tensor.FromArray(new long[] { 1, 2 }, 2)));
        Assert.StartsWith("rotate_half: expected a floating-point tensor", ints.Message);
    }

    [Fact]
    public void Apply_refuses_cos_or_sin_of_another_float_dtype_naming_apply_rotary_pos_emb()
    {
        // mutants: the op name given to the dtype checks emptied, the sin check removed (a bf16 sin table silently
        // promoted against fp32 q)
        var q = Tensor.Zeros(DType.Float32, 1, 2, 3, 8);
        var inv = Rotary.InvFreq(10000.0, 8);
        var (cos, sin) = Rotary.CosSin(inv, Tensor.FromArray(new long[] { 0, 1, 2 }, 3), DType.Float32);
        var (cosB, sinB) = Rotary.CosSin(inv, Tensor.FromArray(new long[] { 0, 1, 2 }, 3), DType.BFloat16);
        var badCos = Assert.Throws<ArgumentException>(() => Rotary.Apply(q, cosB, sin));
        Assert.StartsWith("apply_rotary_pos_emb: mixed float dtypes float32", badCos.Message);
        var badSin = Assert.Throws<ArgumentException>(() => Rotary.Apply(q, cos, sinB));
        Assert.StartsWith("apply_rotary_pos_emb: mixed float dtypes float32", badSin.Message);
    }

    [Fact]
    public void Apply_refuses_a_table_that_would_broadcast_q_larger_or_an_odd_head_dim()
    {
        // mutants: the broadcast check's throw removed or emptied (a [2, 3, 8] table against q [1, 2, 3, 8] silently made
        // a [2, 2, 3, 8] output), the odd head_dim throw removed or emptied
        var inv = Rotary.InvFreq(10000.0, 8);
        var (cos, sin) = Rotary.CosSin(inv, Tensor.FromArray(new long[] { 0, 1, 2, 3, 4, 5 }, 2, 3), DType.Float32); // [2, 3, 8]
        var wide = Assert.Throws<ArgumentException>(() => Rotary.Apply(Tensor.Zeros(DType.Float32, 1, 2, 3, 8), cos, sin));
        Assert.Equal("apply_rotary_pos_emb: cos/sin [2, 1, 3, 8] do not broadcast to q [1, 2, 3, 8]", wide.Message);
        var oddCos = Tensor.Zeros(DType.Float32, 1, 3, 7);
        var odd = Assert.Throws<ArgumentException>(() => Rotary.Apply(Tensor.Zeros(DType.Float32, 1, 2, 3, 7), oddCos, oddCos));
        Assert.Equal("apply_rotary_pos_emb: head dim must be even, got shape [1, 2, 3, 7]", odd.Message);
    }

    [Fact]
    public void A_wavelength_exactly_at_the_llama3_low_frequency_edge_is_smoothed_to_inv_over_factor()
    {
        // HF: inv_l = where(wavelen > low_wl, inv / factor, inv); is_medium = ~(wavelen < high_wl) * ~(wavelen > low_wl):
        // a wavelength equal to low_wl is medium, smoothed with smooth = 0, i.e. inv / factor. Mutants: either `>` as
        // `>=` (inv / factor^2, or inv unscaled). The catalog's llama3 model has no wavelength on an edge; this config
        // puts dim 0's (inv 1, wavelength float(2 pi)) exactly on low_wl = float(64 / low_freq_factor).
        double low = 64 / (double)(float)(2 * Math.PI);
        var inv = Rotary.InvFreqLlama3(50000.0, 24, factor: 8.0, lowFreqFactor: low, highFreqFactor: 20.0, originalMaxPositionEmbeddings: 64);
        Assert.Equal((float)(2 * Math.PI), (float)(64 / low));                 // the edge is hit exactly
        Assert.Equal(0.125, inv.ToDoubleArray()[0], 1e-6);
    }
}
