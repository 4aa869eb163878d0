using System.Numerics.Tensors;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The host kernels of src/Engine/Kernels (outside Gemm/) called directly, each against the naive computation its
/// summary states, bit for bit where the arithmetic is defined (inputs chosen so that any summation order is exact
/// where the kernel's order is free): the Stryker.NET mutants of those files that the ops' tests and the catalog let
/// through (notes/issue-21-mutkernels.md) are an index, a bound, a sign, a rounding or a branch that a model's tensors
/// never reach, e.g. a row length that is not a multiple of the vector width, NaN inputs, k larger than the row.
/// </summary>
public class KernelsMutationTests
{
    private static float[] Random(int n, int seed, float scale = 1f)
    {
        var r = new System.Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(r.NextDouble() * 2 - 1) * scale;
        return x;
    }

    // small integers: every product and every sum of a few hundred of them is exact in float32, in any order
    private static float[] SmallInts(int n, int seed, int max = 8)
    {
        var r = new System.Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = r.Next(-max, max + 1);
        return x;
    }

    private static void BitEqual(float[] want, ReadOnlySpan<float> got, string what)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
            if (BitConverter.SingleToInt32Bits(want[i]) != BitConverter.SingleToInt32Bits(got[i]) && !(float.IsNaN(want[i]) && float.IsNaN(got[i])))
                Assert.Fail($"{what}: element {i} is {got[i]:R}, want {want[i]:R}");
    }

    // ---------------------------------------------------------------- Reductions

    // The invariant order the summary states: four 4-lane accumulators over blocks of 16, combined (a0+a2)+(a1+a3),
    // lanes (0+2)+(1+3), then the tail one by one.
    private static float InvariantOrder(float[] x, Func<float, float> term)
    {
        var a = new float[16];
        int i = 0;
        for (; i + 16 <= x.Length; i += 16)
            for (int l = 0; l < 16; l++) a[l] += term(x[i + l]);
        var v = new float[4];
        for (int l = 0; l < 4; l++) v[l] = (a[l] + a[8 + l]) + (a[4 + l] + a[12 + l]);
        float s = (v[0] + v[2]) + (v[1] + v[3]);
        for (; i < x.Length; i++) s += term(x[i]);
        return s;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(37)]
    [InlineData(48)]
    [InlineData(100)]
    public void The_invariant_sums_take_the_stated_order_bit_for_bit(int n)
    {
        // mutants: the block loop's bound (a row of exactly 16 or 32 taken as tail) and step, an accumulator's offset,
        // the lanes' or accumulators' pairing, the tail's term (t, t*t, (t-c)^2), a `+=` as `-=`; the values spread
        // over 2^-8..2^8 so that another order gives other bits
        var x = Random(n, 11 + n, 3f);
        var spread = new System.Random(n);
        for (int i = 0; i < n; i++) x[i] = MathF.ScaleB(x[i], spread.Next(-8, 9));
        const float c = 0.3125f;
        BitEqual([InvariantOrder(x, t => t)], [K.Reductions.SumInvariant(x)], "SumInvariant");
        BitEqual([InvariantOrder(x, t => t * t)], [K.Reductions.SumSquaresInvariant(x)], "SumSquaresInvariant");
        BitEqual([InvariantOrder(x, t => (t - c) * (t - c))], [K.Reductions.SumSquaredDeviationsInvariant(x, c)], "SumSquaredDeviationsInvariant");
        BitEqual([InvariantOrder(x, t => t)], [K.Reductions.Sum(x, invariant: true)], "Sum invariant");
        BitEqual([InvariantOrder(x, t => t * t)], [K.Reductions.SumSquares(x, invariant: true)], "SumSquares invariant");
        BitEqual([InvariantOrder(x, t => (t - c) * (t - c))], [K.Reductions.SumSquaredDeviations(x, c, invariant: true)], "SumSquaredDeviations invariant");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    [InlineData(256)]
    [InlineData(700)]
    public void The_normal_sums_square_first_in_chunks_of_256_bit_for_bit(int n)
    {
        // mutants: the chunk loop (bound, step, the slice's length), subtract/square removed, `s +=` as `-=`
        var x = Random(n, 5 + n, 2f);
        const float c = -0.75f;
        float sq = 0, dev = 0;
        for (int i = 0; i < n; i += 256)
        {
            var chunk = x.AsSpan(i, Math.Min(256, n - i));
            var b = new float[chunk.Length];
            TensorPrimitives.Multiply(chunk, chunk, b);
            sq += TensorPrimitives.Sum(b);
            TensorPrimitives.Subtract(chunk, c, b);
            TensorPrimitives.Multiply(b, b, b);
            dev += TensorPrimitives.Sum(b);
        }
        BitEqual([TensorPrimitives.Sum(x)], [K.Reductions.Sum(x, invariant: false)], "Sum");
        BitEqual([sq], [K.Reductions.SumSquares(x, invariant: false)], "SumSquares");
        BitEqual([dev], [K.Reductions.SumSquaredDeviations(x, c, invariant: false)], "SumSquaredDeviations");
    }

    [Fact]
    public void Argmax_and_argmin_take_the_first_extreme_and_the_first_nan()
    {
        // mutants: the comparisons (`>` as `>=` takes the last tie), the NaN returns, the loop's start and bound
        Assert.Equal(1, K.Reductions.ArgMax([1f, 5f, 2f, 5f, -1f]));
        Assert.Equal(4, K.Reductions.ArgMin([1f, 5f, 2f, 5f, -1f, -1f]));
        Assert.Equal(0, K.Reductions.ArgMax([7f, 5f, 2f]));
        Assert.Equal(0, K.Reductions.ArgMin([-7f, 5f, 2f]));
        Assert.Equal(2, K.Reductions.ArgMax([1f, 5f, float.NaN, 9f, float.NaN]));
        Assert.Equal(2, K.Reductions.ArgMin([1f, -5f, float.NaN, -9f, float.NaN]));
        Assert.Equal(0, K.Reductions.ArgMax([float.NaN, 5f, 9f]));
        Assert.Equal(0, K.Reductions.ArgMin([float.NaN, -5f, -9f]));
        Assert.Equal(3, K.Reductions.ArgMax([1f, 2f, 3f, 4f]));
        Assert.Equal(3, K.Reductions.ArgMin([4f, 3f, 2f, 1f]));
        Assert.Equal(1, K.Reductions.ArgMax([1L, 5L, 2L, 5L]));
        Assert.Equal(3, K.Reductions.ArgMax([1L, 2L, 3L, 4L]));
        Assert.Equal(2, K.Reductions.ArgMin([1L, 5L, -2L, -2L]));
        Assert.Equal(3, K.Reductions.ArgMin([4L, 3L, 2L, 1L]));
        Assert.Equal(0, K.Reductions.ArgMin([-4L, 3L, 2L, 1L]));
        Assert.Equal(4f, K.Reductions.Max([1f, 4f, -2f]));
        Assert.Equal(-2f, K.Reductions.Min([1f, 4f, -2f]));
    }

    // ---------------------------------------------------------------- Softmax, norms

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Softmax_and_log_softmax_rows_are_their_formulas(bool invariant)
    {
        // mutants: max-subtraction, the exp's path, 1/s, the log's rounding to the dtype, x - m - log s
        var x = Random(37, 3, 6f);
        float m = TensorPrimitives.Max(x);
        var e = new float[x.Length];
        for (int i = 0; i < x.Length; i++) e[i] = invariant ? MathF.Exp(x[i] - m) : 0;
        if (!invariant) { TensorPrimitives.Subtract(x, m, e); TensorPrimitives.Exp(e, e); }
        float s = invariant ? InvariantOrder(e, t => t) : TensorPrimitives.Sum(e);
        var want = new float[x.Length];
        TensorPrimitives.Multiply(e, 1f / s, want);
        var got = new float[x.Length];
        K.Softmax.Row(x, got, invariant);
        BitEqual(want, got, "softmax");

        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
        {
            float logS = K.Rounding.To(MathF.Log(K.Rounding.To(s, dtype)), dtype);
            var wantLog = new float[x.Length];
            for (int i = 0; i < x.Length; i++) wantLog[i] = (x[i] - m) - logS;
            K.Softmax.LogRow(x, got, invariant, dtype);
            BitEqual(wantLog, got, $"log_softmax {dtype}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Layer_norm_and_rms_norm_rows_are_their_formulas(bool invariant)
    {
        // mutants: mean and variance divided by n, rstd, the bias term -mean*rstd, gamma and beta applied or skipped,
        // the clamp of a negative variance, eps added
        var x = Random(40, 21, 3f);
        for (int i = 0; i < x.Length; i++) x[i] += 2.5f;   // a mean far from 0
        var gamma = Random(40, 22, 2f);
        var beta = Random(40, 23, 2f);
        const float eps = 0.0625f;
        int n = x.Length;
        float mean = K.Reductions.Sum(x, invariant) / n;
        float variance = K.Reductions.SumSquaredDeviations(x, mean, invariant) / n;
        float rstd = 1f / MathF.Sqrt(variance + eps);
        float bias = -mean * rstd;
        var plain = new float[n];
        for (int i = 0; i < n; i++) plain[i] = x[i] * rstd + bias;
        var got = new float[n];
        K.LayerNorm.Row(x, [], [], got, eps, invariant);
        BitEqual(plain, got, "layer norm, no affine");
        var affine = new float[n];
        for (int i = 0; i < n; i++) affine[i] = plain[i] * gamma[i] + beta[i];
        K.LayerNorm.Row(x, gamma, beta, got, eps, invariant);
        BitEqual(affine, got, "layer norm, gamma and beta");

        // a constant row: variance 0, so rstd = 1/sqrt(eps) and every output is 0 (+ beta)
        var flat = Enumerable.Repeat(3f, 8).ToArray();
        var gotFlat = new float[8];
        K.LayerNorm.Row(flat, [], [], gotFlat, 0.25f, invariant);
        Assert.All(gotFlat, v => Assert.Equal(0f, v));

        float ms = K.Reductions.SumSquares(x, invariant) / n;
        float r = 1f / MathF.Sqrt(ms + eps);
        var rms = new float[n];
        for (int i = 0; i < n; i++) rms[i] = x[i] * r;
        K.RmsNorm.Row(x, got, eps, invariant);
        BitEqual(rms, got, "rms norm");
    }

    // ---------------------------------------------------------------- Rounding, rotary

    [Fact]
    public void Rounding_goes_to_the_dtype_and_leaves_float32_alone()
    {
        // mutants: the dtype switch's arms, the in-place loop's bound, Float16 rounded as bf16 or not at all
        float v = 1.00390625f + 0.001f;   // between bf16 and half neighbours
        Assert.Equal(BFloat16.Round(v), K.Rounding.To(v, DType.BFloat16));
        Assert.Equal((float)(Half)v, K.Rounding.To(v, DType.Float16));
        Assert.Equal(v, K.Rounding.To(v, DType.Float32));
        Assert.NotEqual(BFloat16.Round(v), (float)(Half)v);
        var x = Random(19, 4, 3f);
        var b = (float[])x.Clone();
        K.Rounding.InPlace(b, DType.BFloat16);
        BitEqual(x.Select(BFloat16.Round).ToArray(), b, "bf16 in place");
        var h = (float[])x.Clone();
        K.Rounding.InPlace(h, DType.Float16);
        BitEqual(x.Select(t => (float)(Half)t).ToArray(), h, "fp16 in place");
        var f = (float[])x.Clone();
        K.Rounding.InPlace(f, DType.Float32);
        BitEqual(x, f, "fp32 in place");
    }

    [Theory]
    [InlineData(16, DType.Float32)]    // the 8-wide path
    [InlineData(32, DType.BFloat16)]   // the 8-wide path with its roundings
    [InlineData(12, DType.Float32)]    // half 6: the scalar path
    [InlineData(12, DType.BFloat16)]
    [InlineData(16, DType.Float16)]    // a dtype the vector path does not take
    public void Rotary_apply_row_is_q_cos_plus_rotate_half_q_sin(int d, DType dtype)
    {
        // mutants: rotate_half's sign and halves, the vector path's choice (half % 8), its offsets and roundings
        var q = Random(d, 31 + d, 2f);
        var cos = Random(d, 32 + d);
        var sin = Random(d, 33 + d);
        int half = d / 2;
        var want = new float[d];
        for (int j = 0; j < d; j++)
        {
            float rh = j < half ? -q[j + half] : q[j - half];
            want[j] = K.Rounding.To(q[j] * cos[j], dtype) + K.Rounding.To(rh * sin[j], dtype);
        }
        var got = new float[d];
        K.Rotary.ApplyRow(q, cos, sin, got, dtype);
        BitEqual(want, got, $"rope d {d} {dtype}");

        var rot = new float[d];
        K.Rotary.RotateHalf(q, rot);
        for (int j = 0; j < half; j++)
        {
            Assert.Equal(-q[j + half], rot[j]);
            Assert.Equal(q[j], rot[j + half]);
        }
    }

    // ---------------------------------------------------------------- TopK

    [Fact]
    public void Top_k_is_a_stable_descending_selection_with_nan_largest()
    {
        // mutants: Greater's NaN rules, the skip test, the insertion point, the shift loop, the count
        float nan = float.NaN;
        var x = new[] { 3f, 1f, 4f, 1f, 5f, 9f, 2f, 6f, 5f, 3f, nan, 5f, -1f };
        for (int k = 0; k <= x.Length; k++)
        {
            var want = x.Select((v, i) => (v, i)).OrderByDescending(p => float.IsNaN(p.v) ? float.PositiveInfinity : p.v)
                .ThenBy(p => p.i).Take(k).ToArray();
            var values = new float[k];
            var indices = new long[k];
            K.TopK.Row(x, k, values, indices);
            Assert.Equal(want.Select(p => (long)p.i).ToArray(), indices);
            for (int j = 0; j < k; j++) Assert.Equal(BitConverter.SingleToInt32Bits(want[j].v), BitConverter.SingleToInt32Bits(values[j]));
        }
        Assert.True(K.TopK.Greater(nan, 1f));
        Assert.False(K.TopK.Greater(1f, nan));
        Assert.False(K.TopK.Greater(nan, nan));
        Assert.True(K.TopK.Greater(2f, 1f));
        Assert.False(K.TopK.Greater(1f, 1f));
        Assert.False(K.TopK.Greater(1f, 2f));
        // the output spans still hold a previous row's results (a reused buffer): the insertion starts after the
        // `count` kept, not at k - 1 among stale values
        foreach (float stale in new[] { float.NaN, 100f, -100f })
        {
            var v2 = Enumerable.Repeat(stale, 4).ToArray();
            var i2 = Enumerable.Repeat(-5L, 4).ToArray();
            K.TopK.Row([1f, 3f, -2f, 2f, 0f], 4, v2, i2);
            Assert.Equal([3f, 2f, 1f, 0f], v2);
            Assert.Equal([1L, 3L, 0L, 4L], i2);
        }
        // a row shorter than k: the first `count` places only
        var vs = new float[] { -7f, -7f, -7f };
        var ix = new long[] { -1, -1, -1 };
        K.TopK.Row([2f, 8f], 3, vs, ix);
        Assert.Equal([8f, 2f, -7f], vs);
        Assert.Equal([1L, 0L, -1L], ix);
    }

    // ---------------------------------------------------------------- Elementwise

    [Theory]
    [InlineData(1, 1)]
    [InlineData(1, 0)]
    [InlineData(0, 1)]
    [InlineData(2, 1)]
    [InlineData(0, 0)]
    public void Binary_ops_at_every_stride_pair_are_their_scalar_formulas(int strideA, int strideB)
    {
        // mutants: each stride branch's condition, each op's primitive (Sub's and Div's operand order with a scalar on
        // the left), the general loop's strides, the empty early return
        const int n = 13;
        var a = Random(n * 2 + 1, 41, 3f);
        var b = Random(n * 2 + 1, 42, 3f);
        b[0] = 1.75f;
        a[3] = float.NaN; b[5] = float.NaN;
        foreach (var op in Enum.GetValues<K.BinaryOp>())
        {
            var want = new float[n];
            for (int i = 0; i < n; i++)
            {
                float x = a[i * strideA], y = b[i * strideB];
                want[i] = op switch
                {
                    K.BinaryOp.Add => x + y,
                    K.BinaryOp.Sub => x - y,
                    K.BinaryOp.Mul => x * y,
                    K.BinaryOp.Div => x / y,
                    K.BinaryOp.Maximum => float.IsNaN(x) || float.IsNaN(y) ? float.NaN : Math.Max(x, y),
                    _ => float.IsNaN(x) || float.IsNaN(y) ? float.NaN : Math.Min(x, y),
                };
            }
            var got = new float[n];
            K.Elementwise.Binary(op, a, strideA, b, strideB, got);
            BitEqual(want, got, $"{op} strides {strideA},{strideB}");
        }
        K.Elementwise.Binary(K.BinaryOp.Add, [], 1, [], 1, []);   // nothing to do
    }

    [Fact]
    public void Maximum_and_minimum_propagate_nan_from_either_side()
    {
        Assert.True(float.IsNaN(K.Elementwise.Apply(K.BinaryOp.Maximum, float.NaN, 1f)));
        Assert.True(float.IsNaN(K.Elementwise.Apply(K.BinaryOp.Maximum, 1f, float.NaN)));
        Assert.True(float.IsNaN(K.Elementwise.Apply(K.BinaryOp.Minimum, float.NaN, 1f)));
        Assert.True(float.IsNaN(K.Elementwise.Apply(K.BinaryOp.Minimum, 1f, float.NaN)));
        Assert.Equal(2f, K.Elementwise.Apply(K.BinaryOp.Maximum, 1f, 2f));
        Assert.Equal(1f, K.Elementwise.Apply(K.BinaryOp.Minimum, 1f, 2f));
        Assert.Throws<ArgumentOutOfRangeException>(() => K.Elementwise.Apply((K.BinaryOp)99, 1f, 2f));
    }

    [Fact]
    public void Unary_ops_are_their_formulas()
    {
        // mutants: each op's primitive, rsqrt's two roundings, tanh's small-argument correction (|x| < 0.25) and its
        // chunking over 256, sigmoid's steps
        var x = Random(600, 51, 3f);
        x[7] = 0.2499f; x[8] = -0.2501f; x[9] = 0.25f; x[10] = 1e-3f;
        var pos = x.Select(MathF.Abs).ToArray();
        // the vector primitives over the whole row (an element's result does not depend on its place in a long row)
        var tanhAll = new float[x.Length];
        TensorPrimitives.Tanh(x, tanhAll);
        var expNeg = x.Select(v => -v).ToArray();
        TensorPrimitives.Exp(expNeg, expNeg);
        var expAll = new float[x.Length];
        TensorPrimitives.Exp(x, expAll);
        var logAll = new float[x.Length];
        TensorPrimitives.Log(pos, logAll);
        int at = 0;
        float Tanh(float v) { float t = tanhAll[at++]; return MathF.Abs(v) < 0.25f ? MathF.Tanh(v) : t; }
        float Sigmoid(float v) => 1f / (expNeg[at++] + 1f);
        void Check(K.UnaryOp op, float[] input, Func<float, float> f)
        {
            at = 0;
            var got = new float[input.Length];
            K.Elementwise.Unary(op, input, got);
            BitEqual(input.Select(f).ToArray(), got, op.ToString());
        }
        Check(K.UnaryOp.Neg, x, v => -v);
        Check(K.UnaryOp.Abs, x, MathF.Abs);
        Check(K.UnaryOp.Exp, x, _ => expAll[at++]);
        Check(K.UnaryOp.Log, pos, _ => logAll[at++]);
        Check(K.UnaryOp.Sqrt, pos, MathF.Sqrt);
        Check(K.UnaryOp.Rsqrt, pos, v => 1f / MathF.Sqrt(v));
        Check(K.UnaryOp.Tanh, x, Tanh);
        Check(K.UnaryOp.Sigmoid, x, Sigmoid);
        Check(K.UnaryOp.Square, x, v => v * v);
        Check(K.UnaryOp.Reciprocal, x, v => 1f / v);
        Assert.Throws<ArgumentOutOfRangeException>(() => K.Elementwise.Unary((K.UnaryOp)99, x, new float[x.Length]));
        // tanh in place (y is x): the chunk keeps the arguments
        var inPlace = (float[])x.Clone();
        K.Elementwise.Tanh(inPlace, inPlace);
        at = 0;
        BitEqual(x.Select(Tanh).ToArray(), inPlace, "tanh in place");
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(2.0)]
    [InlineData(3.0)]
    [InlineData(0.5)]
    [InlineData(-0.5)]
    [InlineData(-1.0)]
    [InlineData(-2.0)]
    [InlineData(1.5)]
    public void Pow_by_a_scalar_is_each_special_case_and_math_pow_otherwise(double exponent)
    {
        var x = Random(21, 61, 3f).Select(v => MathF.Abs(v) + 0.1f).ToArray();
        Func<float, float> f = exponent switch
        {
            1.0 => v => v,
            2.0 => v => v * v,
            3.0 => v => v * v * v,
            0.5 => MathF.Sqrt,
            -0.5 => v => 1f / MathF.Sqrt(v),
            -1.0 => v => 1f / v,
            -2.0 => v => 1f / (v * v),
            _ => v => (float)Math.Pow(v, (float)exponent),
        };
        var got = new float[x.Length];
        K.Elementwise.PowScalar(x, exponent, got);
        BitEqual(x.Select(f).ToArray(), got, $"pow {exponent}");
    }

    [Fact]
    public void Clamp_bounds_each_side_and_keeps_nan()
    {
        float[] x = [-3f, -1f, 0f, 1f, 3f, float.NaN, -1.5f, 1.5f];
        var y = new float[x.Length];
        K.Elementwise.Clamp(x, -1.5f, 1.5f, y);
        BitEqual([-1.5f, -1f, 0f, 1f, 1.5f, float.NaN, -1.5f, 1.5f], y, "clamp both");
        K.Elementwise.Clamp(x, -1.5f, null, y);
        BitEqual([-1.5f, -1f, 0f, 1f, 3f, float.NaN, -1.5f, 1.5f], y, "clamp min");
        K.Elementwise.Clamp(x, null, 1.5f, y);
        BitEqual([-3f, -1f, 0f, 1f, 1.5f, float.NaN, -1.5f, 1.5f], y, "clamp max");
        K.Elementwise.Clamp(x, null, null, y);
        BitEqual(x, y, "clamp none");
    }

    // ---------------------------------------------------------------- Erf, activations

    [Fact]
    public void Erf_matches_its_high_precision_values_on_both_branches_and_beyond_six()
    {
        // mutants: the series (coefficients, sign, factorial, term count, Horner order), the 2.5 and 6.0 thresholds, the
        // continued fraction's terms, erfc's formula, the sign copy, NaN (within 4e-15: the series loses a few ulps
        // near 2.5, where its terms are largest)
        (double X, double Erf)[] table =
        [
            (0.0, 0.0), (0.1, 0.1124629160182849), (0.5, 0.5204998778130465), (1.0, 0.8427007929497149),
            (-1.0, -0.8427007929497149), (1.5, 0.9661051464753108), (2.0, 0.9953222650189527), (2.4, 0.9993114861033550),
            (2.5, 0.9995930479825550), (-2.6, -0.9997639655834707), (3.0, 0.9999779095030014), (4.0, 0.9999999845827421),
            (5.0, 0.9999999999984626), (5.9, 0.9999999999999999), (-6.5, -1.0), (30.0, 1.0),
        ];
        foreach (var (x, erf) in table)
            Assert.True(Math.Abs(K.Erf.Compute(x) - erf) <= 4e-15, $"erf({x}) = {K.Erf.Compute(x):R}, want {erf:R}");
        Assert.True(double.IsNaN(K.Erf.Compute(double.NaN)));
        Assert.Equal((float)K.Erf.Compute(0.7), K.Erf.Compute(0.7f));
        float[] xs = [0.7f, -2.7f, 3.5f];
        var ys = new float[3];
        K.Erf.Compute(xs, ys);
        BitEqual(xs.Select(v => (float)K.Erf.Compute((double)v)).ToArray(), ys, "erf span");
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Every_activation_is_its_aten_or_hf_formula(DType dtype)
    {
        // mutants: each activation's constants and operators, GeluNew's and QuickGelu's per-op roundings, relu's NaN
        var x = Random(33, 71, 4f);
        x[0] = float.NaN; x[1] = 0f; x[2] = -0f;
        const float sqrtHalf = 0.70710678118654752440f;
        const float beta = (float)(1.41421356237309504880 * 1.12837916709551257390 * 0.5);
        float sqrtTwoOverPi = (float)Math.Sqrt(2.0 / Math.PI);
        float R(float v) => K.Rounding.To(v, dtype);
        var cases = new (ActivationKind Kind, Func<float, float> F)[]
        {
            (ActivationKind.Gelu, v => v * 0.5f * (1f + (float)K.Erf.Compute((double)(v * sqrtHalf)))),
            (ActivationKind.GeluTanh, v => 0.5f * v * (1f + MathF.Tanh(beta * (v + 0.044715f * (v * v * v))))),
            (ActivationKind.GeluNew, v =>
            {
                float t = R(0.044715f * R(v * v * v));
                t = R(MathF.Tanh(R(sqrtTwoOverPi * R(v + t))));
                return R(0.5f * v) * R(1f + t);
            }),
            (ActivationKind.Relu, v => v > 0f || float.IsNaN(v) ? v : 0f),
            (ActivationKind.QuickGelu, v => v * R(1f / (1f + MathF.Exp(-R(1.702f * v))))),
        };
        foreach (var (kind, f) in cases)
        {
            var got = new float[x.Length];
            K.Activations.Apply(kind, x, got, dtype);
            BitEqual(x.Select(f).ToArray(), got, $"{kind} {dtype}");
        }
        // silu: x / (1 + exp(-x)) with the vector exp
        var e = x.Select(v => -v).ToArray();
        TensorPrimitives.Exp(e, e);
        var silu = new float[x.Length];
        K.Activations.Apply(ActivationKind.Silu, x, silu, dtype);
        BitEqual(x.Select((v, i) => v / (e[i] + 1f)).ToArray(), silu, "silu");
        var unknown = Assert.Throws<ArgumentOutOfRangeException>(() => K.Activations.Apply((ActivationKind)99, x, new float[x.Length], dtype));
        Assert.StartsWith("unknown activation", unknown.Message);
        Assert.Equal("kind", unknown.ParamName);
    }

    // ---------------------------------------------------------------- RowParallel

    [Theory]
    [InlineData(1, 1, 4)]          // one row: serial
    [InlineData(5, 100, 4)]        // too few elements: serial
    [InlineData(37, 4096, 1)]      // one thread: serial
    [InlineData(37, 4096, 0)]      // no threads asked: serial, not zero tasks
    [InlineData(37, 4096, 4)]      // parallel, chunks of uneven size
    [InlineData(3, 1 << 15, 8)]    // more threads than rows
    [InlineData(2, 1 << 14, 2)]    // exactly MinParallelElements
    public void Row_parallel_runs_every_row_exactly_once(int rows, int cols, int threads)
    {
        // mutants: the serial test's bounds, the task and chunk counts, a chunk's start and end, the next-chunk counter
        var seen = new int[rows];
        K.RowParallel.For(rows, cols, threads, r => Interlocked.Increment(ref seen[r]));
        Assert.All(seen, c => Assert.Equal(1, c));
    }

    // ---------------------------------------------------------------- Attention

    // The summary's naive computation: scores = round(round(q . k_j) * scale) (the dot products exact here: small
    // integers), p = round(softmax), out = sum_j p_j v_j as one FMA chain per element over j ascending (both kernels' order).
    private static float[] NaiveRow(float[] q, float[] keys, float[] values, int n, int hd, float scale, DType dtype)
    {
        var s = new float[n];
        for (int j = 0; j < n; j++)
        {
            double dot = 0;
            for (int c = 0; c < hd; c++) dot += (double)q[c] * keys[j * hd + c];
            s[j] = K.Rounding.To((float)dot, dtype);
        }
        for (int j = 0; j < n; j++) s[j] = K.Rounding.To(s[j] * scale, dtype);
        K.Softmax.Row(s, s, invariant: false);
        K.Rounding.InPlace(s, dtype);
        var o = new float[hd];
        for (int c = 0; c < hd; c++)
        {
            float acc = 0;
            for (int j = 0; j < n; j++) acc = MathF.FusedMultiplyAdd(s[j], values[j * hd + c], acc);
            o[c] = acc;
        }
        return o;
    }

    [Theory]
    [InlineData(16, DType.Float32, 4, 0.3f)]
    [InlineData(8, DType.BFloat16, 60, 0.0123f)]   // q . k up to 1920: not every score is a bf16 value
    [InlineData(6, DType.Float32, 4, 0.3f)]        // hd not a multiple of 8: the scalar loops
    [InlineData(6, DType.BFloat16, 60, 0.0123f)]
    public void Attention_row_is_the_eager_formula_for_every_key_count(int hd, DType dtype, int qMax, float scale)
    {
        // mutants: the four-keys block (bounds, key offsets, which accumulator goes to which score), the remainder loop,
        // the scalar path, the roundings of the scores (q . k, then times the scale) and probabilities, the weighted
        // sum's rows and its clear
        for (int n = 1; n <= 9; n++)
        {
            var q = SmallInts(hd, 100 + n, qMax);
            var keys = SmallInts(n * hd, 200 + n, 4);
            var values = SmallInts(n * hd, 300 + n, 8);
            var want = NaiveRow(q, keys, values, n, hd, scale, dtype);
            var scores = new float[n + 3];
            var output = Enumerable.Repeat(99f, hd + 2).ToArray();   // stale contents: the kernel clears its hd
            K.Attention.Row<float, K.Float32Kv>(q, keys, values, n, hd, scale, dtype, scores, output);
            BitEqual(want, output.AsSpan(0, hd), $"float32 cache, n {n}, hd {hd}, {dtype}");
            Assert.Equal(99f, output[hd]);
            // the same row from a bf16 cache (small integers are exact in bf16)
            var kb = keys.Select(BFloat16.FromFloat).ToArray();
            var vb = values.Select(BFloat16.FromFloat).ToArray();
            var outB = new float[hd];
            K.Attention.Row<ushort, K.BFloat16Kv>(q, kb, vb, n, hd, scale, dtype, scores, outB);
            BitEqual(want, outB, $"bf16 cache, n {n}, hd {hd}, {dtype}");
        }
    }

    [Fact]
    public void Attention_row_refuses_short_spans_naming_every_length()
    {
        // mutants: each `<` of the check and the `||` between them, the message
        float[] q = new float[8], o = new float[8], s = new float[3], kv = new float[24];
        void Refused(float[] qq, float[] oo, float[] ss, float[] kk, float[] vv)
        {
            var ex = Assert.Throws<ArgumentException>(() => K.Attention.Row<float, K.Float32Kv>(qq, kk, vv, 3, 8, 1f, DType.Float32, ss, oo));
            Assert.Equal($"attention row: hd 8, 3 keys: q {qq.Length}, out {oo.Length}, scores {ss.Length}, keys {kk.Length}, values {vv.Length}", ex.Message);
        }
        Refused(new float[7], o, s, kv, kv);
        Refused(q, new float[7], s, kv, kv);
        Refused(q, o, new float[2], kv, kv);
        Refused(q, o, s, new float[23], kv);
        Refused(q, o, s, kv, new float[23]);
        K.Attention.Row<float, K.Float32Kv>(q, kv, kv, 3, 8, 1f, DType.Float32, s, o);   // exact lengths pass
    }

    [Theory]
    [InlineData(16, DType.Float32, 3, 0.2f)]       // hd 16: the values' 8-lane path
    [InlineData(32, DType.BFloat16, 40, 0.0123f)]  // hd 32: 16 lanes where AVX-512 runs; scores past bf16's integers
    [InlineData(48, DType.Float32, 3, 0.2f)]
    [InlineData(16, DType.BFloat16, 40, 0.0123f)]
    public void Attention_tile_equals_its_rows_one_by_one(int hd, DType dtype, int qMax, float scale)
    {
        // mutants: the tile's max n, each row's offset into q, scores and out, the roundings, the masked columns'
        // clear, the stores of rows 1..3 (and no store past `rows`: the buffers are longer, their tails must stay),
        // the key and column steps
        foreach (int[] n in new[] { new[] { 1 }, new[] { 3, 4 }, new[] { 5, 6, 7 }, new[] { 33, 2, 40, 9 }, new[] { 70, 70, 1, 64 }, new[] { 64, 64, 64 } })
        {
            // ldk: columns to spare, except for the last case, whose ldk is its max n (a key block past max n would
            // write into the next row's scores)
            int rows = n.Length, maxN = n.Max(), ldk = n.Length == 3 && maxN == 64 ? 64 : (maxN + 31) / 32 * 32 + 32;
            var q = SmallInts(rows * hd, 400 + maxN, qMax);
            var keys = SmallInts(maxN * hd, 500 + maxN, 3);         // [maxN, hd]
            var values = SmallInts(maxN * hd, 600 + maxN, 8);
            var keysT = new float[hd * ldk];                          // [hd, ldk]; columns past maxN finite junk
            for (int c = 0; c < hd; c++)
                for (int j = 0; j < ldk; j++) keysT[c * ldk + j] = j < maxN ? keys[j * hd + c] : 1000f + j;
            var scores = Enumerable.Repeat(float.NaN, (rows + 3) * ldk).ToArray();
            var output = Enumerable.Repeat(-77f, (rows + 3) * hd).ToArray();
            K.Attention.Tile(q, rows, n, keysT, ldk, values, hd, scale, dtype, scores, output);
            Assert.All(output.Skip(rows * hd), v => Assert.Equal(-77f, v));
            Assert.All(scores.Skip(rows * ldk), v => Assert.True(float.IsNaN(v), "a score stored past the tile's rows"));
            for (int r = 0; r < rows; r++)
            {
                var want = NaiveRow(q[(r * hd)..((r + 1) * hd)], keys, values, n[r], hd, scale, dtype);
                BitEqual(want, output.AsSpan(r * hd, hd), $"tile row {r} of {rows}, n {n[r]}, hd {hd}");
            }
        }
    }

    [Fact]
    public void Attention_tile_refuses_its_shape_contract()
    {
        // mutants: each condition of the check (rows, hd % 16, ldk % 32, ldk >= max n, the span lengths), the message
        const int hd = 16, ldk = 32;
        float[] q = new float[4 * hd], kt = new float[hd * ldk], v = new float[ldk * hd], s = new float[4 * ldk], o = new float[4 * hd];
        void Refused(int rows, int[] n, int h, int l, float[] qq, float[] kk, float[] vv, float[] ss, float[] oo, string msg)
        {
            var ex = Assert.Throws<ArgumentException>(() => K.Attention.Tile(qq, rows, n, kk, l, vv, h, 1f, DType.Float32, ss, oo));
            Assert.Equal(msg, ex.Message);
        }
        Refused(0, [], hd, ldk, q, kt, v, s, o, "attention tile: 0 rows, hd 16, ldk 32, n up to 0");
        Refused(5, [1, 1, 1, 1, 1], hd, ldk, new float[5 * hd], kt, v, new float[5 * ldk], new float[5 * hd], "attention tile: 5 rows, hd 16, ldk 32, n up to 1");
        Refused(1, [2], 8, ldk, q, kt, v, s, o, "attention tile: 1 rows, hd 8, ldk 32, n up to 2");
        Refused(1, [2], hd, 16, q, kt, v, s, o, "attention tile: 1 rows, hd 16, ldk 16, n up to 2");
        Refused(1, [33], hd, ldk, q, kt, new float[33 * hd], s, o, "attention tile: 1 rows, hd 16, ldk 32, n up to 33");
        Refused(2, [2, 2], hd, ldk, new float[2 * hd - 1], kt, v, s, o, "attention tile: 2 rows, hd 16, ldk 32, n up to 2");
        Refused(1, [2], hd, ldk, q, new float[hd * ldk - 1], v, s, o, "attention tile: 1 rows, hd 16, ldk 32, n up to 2");
        Refused(1, [32], hd, ldk, q, kt, new float[32 * hd - 1], s, o, "attention tile: 1 rows, hd 16, ldk 32, n up to 32");
        Refused(2, [2, 2], hd, ldk, q, kt, v, new float[2 * ldk - 1], o, "attention tile: 2 rows, hd 16, ldk 32, n up to 2");
        Refused(2, [2, 2], hd, ldk, q, kt, v, s, new float[2 * hd - 1], "attention tile: 2 rows, hd 16, ldk 32, n up to 2");
        K.Attention.Tile(new float[2 * hd], 2, [32, 1], new float[hd * ldk], ldk, new float[32 * hd], hd, 1f, DType.Float32,
            new float[2 * ldk], new float[2 * hd]);   // every length exact: accepted
    }
}
