using Harness.Engine.Ops;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Ops.OpsTestUtil;
using KErf = Harness.Engine.Kernels.Erf;

namespace Harness.Tests.Correctness.Ops;

public class ActivationTests
{
    [Theory]
    [InlineData(0.5, 0.5204998778130465)]
    [InlineData(1.0, 0.8427007929497149)]
    [InlineData(-2.0, -0.9953222650189527)]
    [InlineData(3.0, 0.9999779095030014)]
    [InlineData(0.1, 0.1124629160182849)]
    [InlineData(1.5, 0.9661051464753108)]
    [InlineData(2.5, 0.999593047982555)]
    [InlineData(3.5, 0.9999992569016276)]
    [InlineData(4.0, 0.9999999845827421)]
    [InlineData(1e-5, 1.1283791670579e-05)]
    [InlineData(0.84375, 0.7672256612323416)]
    [InlineData(0.0, 0.0)]
    [InlineData(7.0, 1.0)]
    [InlineData(-30.0, -1.0)]
    public void Erf_is_within_one_float_ulp(double x, double expected)
    {
        Assert.True(Math.Abs(KErf.Compute(x) - expected) <= 1e-15 + 2e-16 * Math.Abs(expected), $"double erf({x}) = {KErf.Compute(x):R}");
        float got = KErf.Compute((float)x);
        float want = (float)expected;
        Assert.True(Math.Abs(BitConverter.SingleToInt32Bits(got) - BitConverter.SingleToInt32Bits(want)) <= 1, $"float erf({x}) = {got:R}, want {want:R}");
    }

    [Fact]
    public void Parse_names_aliases_and_error_lists_all()
    {
        Assert.Equal(ActivationKind.Gelu, Activation.Parse("gelu"));
        Assert.Equal(ActivationKind.GeluTanh, Activation.Parse("gelu_pytorch_tanh"));
        Assert.Equal(ActivationKind.GeluTanh, Activation.Parse("gelu_tanh"));
        Assert.Equal(ActivationKind.GeluNew, Activation.Parse("gelu_new"));
        Assert.Equal(ActivationKind.Silu, Activation.Parse("swish"));
        Assert.Equal(ActivationKind.Silu, Activation.Parse("silu"));
        Assert.Equal(ActivationKind.Relu, Activation.Parse("relu"));
        Assert.Equal(ActivationKind.QuickGelu, Activation.Parse("quick_gelu"));
        var ex = Assert.Throws<ArgumentException>(() => Activation.Parse("mish2"));
        foreach (var name in Activation.Names.Keys) Assert.Contains(name, ex.Message);
        Assert.Contains("mish2", ex.Message);
    }

    private static double Tanh(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    private static readonly (ActivationKind Kind, Func<double, double> F)[] Refs =
    [
        (ActivationKind.Gelu, x => 0.5 * x * (1 + KErf.Compute(x / Math.Sqrt(2)))),
        (ActivationKind.GeluTanh, Tanh),
        (ActivationKind.GeluNew, Tanh),
        (ActivationKind.Silu, x => x / (1 + Math.Exp(-x))),
        (ActivationKind.Relu, x => Math.Max(x, 0)),
        (ActivationKind.QuickGelu, x => x / (1 + Math.Exp(-1.702 * x))),
    ];

    private static double R(double v) => BFloat16.Round((float)v);
    private static double GeluNewBf16(double x) =>
        R(0.5 * x) * R(1 + R(Math.Tanh(R((float)Math.Sqrt(2 / Math.PI) * R(x + R(0.044715f * R(x * x * x)))))));
    private static double QuickGeluBf16(double x) => x * R(1 / (1 + Math.Exp(-R(1.702f * x))));

    [Fact]
    public void Activations_match_float64_formulas()
    {
        var x = Elementwise.Mul(Rand(DType.Float32, 71, 8, 257), 3.0);
        var xv = x.ToDoubleArray();
        var xb = x.To(DType.BFloat16);
        var xbv = xb.ToDoubleArray();
        foreach (var (kind, f) in Refs)
        {
            AssertClose(xv.Select(f).ToArray(), Activation.Apply(x, kind), 2e-6, 1e-7, Activation.Name(kind));
            // the Python-formula activations round each op to bf16, so they may sit a few bf16 ulps from the exact value;
            // the fused ones round once (1 ulp allowed for float32 intermediates near a boundary)
            // so their reference is the same op sequence in double with each step rounded to bf16 (HF's result, e.g. 0 where
            // bf16(1 + tanh(u)) cancels to 0); an intermediate may flip by 1 ulp, so 2 ulps are allowed there.
            var bfRef = kind switch
            {
                ActivationKind.GeluNew => GeluNewBf16,
                ActivationKind.QuickGelu => QuickGeluBf16,
                _ => f,
            };
            int ulps = kind is ActivationKind.GeluNew or ActivationKind.QuickGelu ? 2 : Tol.Bf16MaxUlp;
            // abs floor 1e-6: for x << 0 the float32 1 + erf(x/sqrt2) (or 1 + tanh) cancels, as in torch's own float32 kernel
            AssertBf16(xbv.Select(bfRef).ToArray(), Activation.Apply(xb, kind), ulps, "bf16 " + Activation.Name(kind), abs: 1e-6);
        }
    }

    [Fact]
    public void Gated_uses_halves_and_rejects_odd_width()
    {
        var x = Rand(DType.Float32, 72, 3, 2, 20);
        var rows = Rows(x);
        var expect = rows.SelectMany(r => Enumerable.Range(0, 10).Select(i => (double)(float)((float)(r[i] / (1 + Math.Exp(-r[i]))) * r[i + 10]))).ToArray();
        var got = Activation.ApplyGated(x, ActivationKind.Silu);
        Assert.Equal([3, 2, 10], got.ShapeArray);
        AssertClose(expect, got, 2e-6, 1e-7, "gated silu");
        var ex = Assert.Throws<ArgumentException>(() => Activation.ApplyGated(Rand(DType.Float32, 1, 2, 7), ActivationKind.Gelu));
        Assert.Contains("even", ex.Message);
    }

    [Fact]
    public void Gelu_exact_and_tanh_differ_by_a_measured_amount()
    {
        var grid = Enumerable.Range(0, 12001).Select(i => -6f + i * 0.001f).ToArray();
        var x = Tensor.FromArray(grid, grid.Length);
        var exact = Activation.Apply(x, ActivationKind.Gelu).ToDoubleArray();
        var tanh = Activation.Apply(x, ActivationKind.GeluTanh).ToDoubleArray();
        double max = exact.Zip(tanh, (a, b) => Math.Abs(a - b)).Max();
        Assert.InRange(max, 1e-4, 5e-4); // float64 formulas give 4.73e-4 on this grid; the float32 results agree to ~1e-7
    }
}

public class EmbeddingTopKRotaryTests
{
    [Fact]
    public void Embedding_lookup_and_errors()
    {
        var w = Rand(DType.BFloat16, 81, 10, 4);
        var ids = Tensor.FromArray(new int[] { 3, 0, 9, 3, 5, 1 }, 2, 3);
        var y = Embedding.Lookup(w, ids);
        Assert.Equal([2, 3, 4], y.ShapeArray);
        Assert.True(y.Select(0, 1).Select(0, 1).BitwiseEquals(w.Select(0, 5)));
        Assert.True(Embedding.Lookup(w, Tensor.FromArray(new long[] { 9 }, 1)).Select(0, 0).BitwiseEquals(w.Select(0, 9)));
        var ex = Assert.Throws<IndexOutOfRangeException>(() => Embedding.Lookup(w, Tensor.FromArray(new long[] { 2, 10 }, 2)));
        Assert.Contains("10", ex.Message);
        Assert.Contains("vocab size of 10", ex.Message);
    }

    [Fact]
    public void TopK_sorted_with_ties_by_lower_index()
    {
        var x = Tensor.FromArray(new float[] { 1, 5, 3, 5, 2, 5, 0, float.NaN, 4, 4, 4, 1 }, 2, 6);
        var (v, i) = TopK.Forward(x, 3);
        Assert.Equal(new double[] { 5, 5, 5 }, v.ToDoubleArray().Take(3));
        Assert.Equal(new long[] { 1, 3, 5, 1, 2, 3 }, i.ToInt64Array());
        Assert.True(double.IsNaN(v.ToDoubleArray()[3]));
        var r = Rand(DType.Float32, 82, 4, 1000);
        var (rv, ri) = TopK.Forward(r, 50);
        var rows = Rows(r);
        for (int row = 0; row < 4; row++)
        {
            var order = rows[row].Select((val, idx) => (val, idx)).OrderByDescending(p => p.val).ThenBy(p => p.idx).Take(50).ToArray();
            Assert.Equal(order.Select(p => (long)p.idx), ri.ToInt64Array().Skip(row * 50).Take(50));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => TopK.Forward(r, 1001));
    }

    private static uint[] Bits(Tensor t) => t.ToFloatArray().Select(BitConverter.SingleToUInt32Bits).ToArray();

    [Fact]
    public void Inv_freq_matches_torch_bits()
    {
        // captured from transformers' ROPE_INIT_FUNCTIONS on torch 2.14 CPU (head_dim 64)
        uint[] llama3 = [0x3F800000, 0x3F29E1C6, 0x3EE177BC, 0x3E959EE3, 0x3E4693B0, 0x3E03C6A0, 0x3DAEE4AD, 0x3D681E67, 0x3D1A08C8, 0x3CCC6F49, 0x3C87A9C3, 0x3C340D6D, 0x3BEEF74F, 0x3B9E9402, 0x3B527720, 0x3AA9279B, 0x39E13620, 0x38CB98F7, 0x37A3418D, 0x3758AC81, 0x370FC8F8, 0x36BED4F4, 0x367D45C3, 0x3628126B, 0x35DF10C4, 0x359406CB, 0x35447610, 0x35025F34, 0x34AD07A7, 0x3465A54D, 0x341864A7, 0x33CA41B0];
        uint[] linear = [0x3E800000, 0x3E3FF911, 0x3E0FF59A, 0x3DD7E89B, 0x3DA1E89B, 0x3D72D423, 0x3D361887, 0x3D088D77, 0x3CCCCCCD, 0x3C99940D, 0x3C6655C2, 0x3C2CBA15, 0x3C0186E3, 0x3BC2434F, 0x3B91AD39, 0x3B5A7BF2, 0x3B23D70A, 0x3AF5B9B0, 0x3AB8449C, 0x3A8A2E77, 0x3A4F3E38, 0x3A1B690D, 0x39E91528, 0x39AEC98E, 0x3983126F, 0x3944948C, 0x39136A16, 0x38DD1725, 0x38A5CB60, 0x3878A815, 0x383A7753, 0x380BD472];
        Assert.Equal(llama3, Bits(Rotary.InvFreqLlama3(500000.0, 64, 32.0, 1.0, 4.0, 8192)));
        Assert.Equal(linear, Bits(Rotary.InvFreqLinear(10000.0, 64, 4.0)));
        var d = Rotary.InvFreq(10000.0, 128).ToDoubleArray();
        for (int i = 0; i < d.Length; i++) Assert.Equal(1 / Math.Pow(10000, 2.0 * i / 128), d[i], 1e-6 * d[i]);
    }

    [Fact]
    public void Cos_sin_rotate_half_and_apply()
    {
        var inv = Rotary.InvFreq(10000.0, 8);
        var invv = inv.ToDoubleArray();
        var pos = Tensor.FromArray(new long[] { 0, 1, 7, 100, 3, 4 }, 2, 3);
        var (cos, sin) = Rotary.CosSin(inv, pos, DType.Float32, 1.0);
        Assert.Equal([2, 3, 8], cos.ShapeArray);
        var pv = pos.ToInt64Array();
        var cexp = pv.SelectMany(p => Enumerable.Range(0, 8).Select(j => Math.Cos((double)(float)(invv[j % 4] * p)))).ToArray();
        AssertClose(cexp, cos, 1e-7, 1e-7, "cos");
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 6);
        Assert.Equal(new double[] { -4, -5, -6, 1, 2, 3 }, Rotary.RotateHalf(x).ToDoubleArray());

        var q = Rand(DType.Float32, 91, 2, 4, 3, 8); // [B, H, S, D]
        var got = Rotary.Apply(q, cos, sin);
        var qv = q.ToDoubleArray(); var cv = cos.ToDoubleArray(); var sv = sin.ToDoubleArray();
        var exp = new double[qv.Length];
        for (int b = 0; b < 2; b++) for (int h = 0; h < 4; h++) for (int s = 0; s < 3; s++) for (int j = 0; j < 8; j++)
        {
            int qi = ((b * 4 + h) * 3 + s) * 8, ci = (b * 3 + s) * 8;
            double rh = j < 4 ? -qv[qi + j + 4] : qv[qi + j - 4];
            exp[qi + j] = qv[qi + j] * cv[ci + j] + rh * sv[ci + j];
        }
        AssertClose(exp, got, 1e-6, 1e-7, "apply_rotary");
        var qb = q.To(DType.BFloat16);
        var (cb, sb) = Rotary.CosSin(inv, pos, DType.BFloat16);
        var gotB = Rotary.Apply(qb, cb, sb);
        var manual = Elementwise.Add(Elementwise.Mul(qb, cb.Unsqueeze(1)), Elementwise.Mul(Rotary.RotateHalf(qb), sb.Unsqueeze(1)));
        Assert.True(gotB.BitwiseEquals(manual)); // three bf16-rounded ops, as HF
        var qs = q.Transpose(1, 2); // [B, S, H, D] with unsqueeze_dim=2
        Assert.True(Rotary.Apply(qs, cos, sin, 2).BitwiseEquals(got.Transpose(1, 2).Contiguous()));
    }
}
