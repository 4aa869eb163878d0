using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The towers' torch ops (<see cref="TowerOps"/>) against their torch definitions, computed here index by index in
/// float64: the towers' scenarios run each op on one shape (square inputs, symmetric padding, stride 1 or 2 in both
/// axes, one batch), where a row/column swap, a pad read from the wrong side or a batch offset dropped gives the same
/// numbers. Each test uses uneven sizes (H != W, stride and padding differing per axis, batch 2) and checks every
/// refusal's message. Written for the Stryker.NET mutants of src/Engine/Ops/TowerOps.cs (notes/issue-21-mutops.md).
/// </summary>
public class TowerOpsMutationTests
{
    private static Tensor Seq(int seed, params int[] shape)
    {
        // distinct, exactly representable values (multiples of 1/64 in [-2, 2)), so a swapped index changes the sum
        int n = shape.Aggregate(1, (a, b) => a * b);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = ((i * 37 + seed * 11) % 256 - 128) / 64f;
        return Tensor.FromArray(v, shape);
    }

    // torch's conv2d of a channels-last x [B, H, W, Cin] padded (top, bottom, left, right) with weight [Cout, Cin/groups, kh, kw]
    private static double[] RefConv(float[] x, int b, int h, int w, int cin, float[] wt, int cout, int kh, int kw,
        (int H, int W) s, (int T, int B, int L, int R) p, bool depthwise)
    {
        int ho = (h + p.T + p.B - kh) / s.H + 1, wo = (w + p.L + p.R - kw) / s.W + 1;
        var y = new double[b * ho * wo * cout];
        for (int n = 0; n < b; n++)
        for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
        for (int co = 0; co < cout; co++)
        {
            double acc = 0;
            for (int ci = 0; ci < (depthwise ? 1 : cin); ci++)
            for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++)
            {
                int iy = oy * s.H - p.T + ky, ix = ox * s.W - p.L + kx;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                int c = depthwise ? co : ci;
                acc += (double)wt[((co * (depthwise ? 1 : cin) + ci) * kh + ky) * kw + kx] * x[((n * h + iy) * w + ix) * cin + c];
            }
            y[((n * ho + oy) * wo + ox) * cout + co] = acc;
        }
        return y;
    }

    private static void Close(double[] want, Tensor got, double tol, string what)
    {
        var g = got.ToDoubleArray();
        Assert.Equal(want.Length, g.Length);
        for (int i = 0; i < g.Length; i++)
            Assert.True(Math.Abs(g[i] - want[i]) <= tol * (1 + Math.Abs(want[i])), $"{what}[{i}]: got {g[i]:R}, want {want[i]:R}");
    }

    [Fact]
    public void Conv3x3_stride_2_pads_one_on_every_side_and_keeps_batch_rows_and_columns_apart()
    {
        var x = Seq(1, 2, 5, 4, 3);                  // [B=2, H=5, W=4, Cin=3]
        var w = Seq(2, 2, 3, 3, 3);                  // [Cout=2, 3, 3, 3]
        var y = TowerOps.Conv3x3Stride2ChannelsLast(x, w, MatmulOptions.Default);
        Assert.Equal(new[] { 2, 3, 2, 2 }, y.Shape.ToArray());        // Ho = ceil(5/2), Wo = ceil(4/2)
        Close(RefConv(x.ToFloatArray(), 2, 5, 4, 3, w.ToFloatArray(), 2, 3, 3, (2, 2), (1, 1, 1, 1), false), y, 1e-5, "conv3x3s2");
        // a bf16 input: the patches keep x's dtype (exact), the matmul rounds once
        var yb = TowerOps.Conv3x3Stride2ChannelsLast(x.To(DType.BFloat16), w.To(DType.BFloat16), MatmulOptions.Default);
        Assert.Equal(DType.BFloat16, yb.DType);
        Close(RefConv(x.ToFloatArray(), 2, 5, 4, 3, w.ToFloatArray(), 2, 3, 3, (2, 2), (1, 1, 1, 1), false), yb, 1e-2, "conv3x3s2 bf16");
    }

    [Theory]
    [InlineData(new[] { 2, 3, 3 }, "[2, 3, 3]")]
    [InlineData(new[] { 2, 2, 3, 3 }, "[2, 2, 3, 3]")]
    [InlineData(new[] { 2, 3, 2, 3 }, "[2, 3, 2, 3]")]
    [InlineData(new[] { 2, 3, 3, 2 }, "[2, 3, 3, 2]")]
    public void Conv3x3_refuses_a_weight_that_is_not_out_by_in_by_3_by_3(int[] shape, string shown)
    {
        var x = Seq(1, 1, 4, 4, 3);
        var ex = Assert.Throws<ArgumentException>(() => TowerOps.Conv3x3Stride2ChannelsLast(x, Tensor.Zeros(DType.Float32, shape), MatmulOptions.Default));
        Assert.Equal($"conv2d: weight {shown} does not fit [out, 3, 3, 3] for input [1, 4, 4, 3] (channels last)", ex.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(4)]
    [InlineData(17)]
    [InlineData(18)]
    public void Conv2d_with_per_side_padding_and_per_axis_stride_matches_torch_whatever_the_reduction_block(int block)
    {
        var x = Seq(3, 2, 6, 5, 2);                  // [B=2, H=6, W=5, Cin=2]
        var w = Seq(4, 3, 2, 3, 3);                  // [Cout=3, 2, kh=3, kw=3]: K = 18
        var pad = (Top: 0, Bottom: 2, Left: 1, Right: 0);
        var y = TowerOps.Conv2dChannelsLast(x, w, (2, 1), pad, MatmulOptions.Default, block);
        // Ho = (6 + 2 - 3) / 2 + 1 = 3, Wo = (5 + 1 - 3) / 1 + 1 = 4
        Assert.Equal(new[] { 2, 3, 4, 3 }, y.Shape.ToArray());
        Close(RefConv(x.ToFloatArray(), 2, 6, 5, 2, w.ToFloatArray(), 3, 3, 3, (2, 1), (0, 2, 1, 0), false), y, 1e-5, $"conv2d block {block}");
        // the other axis strided: Ho = (6 + 1 - 3) / 1 + 1 = 5, Wo = (5 + 2 - 3) / 2 + 1 = 3
        var y2 = TowerOps.Conv2dChannelsLast(x, w, (1, 2), (1, 0, 0, 2), MatmulOptions.Default, block);
        Assert.Equal(new[] { 2, 5, 3, 3 }, y2.Shape.ToArray());
        Close(RefConv(x.ToFloatArray(), 2, 6, 5, 2, w.ToFloatArray(), 3, 3, 3, (1, 2), (1, 0, 0, 2), false), y2, 1e-5, $"conv2d (1, 2) block {block}");
    }

    [Fact]
    public void Conv2d_refuses_a_weight_of_other_channels_or_rank_and_an_input_smaller_than_the_kernel()
    {
        var x = Seq(1, 1, 2, 3, 2);
        var rank = Assert.Throws<ArgumentException>(() => TowerOps.Conv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 4, 2, 3), (1, 1), (0, 0, 0, 0), MatmulOptions.Default));
        Assert.Equal("conv2d: weight [4, 2, 3] does not fit [out, 2, kh, kw] for input [1, 2, 3, 2] (channels last)", rank.Message);
        var chans = Assert.Throws<ArgumentException>(() => TowerOps.Conv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 4, 3, 1, 1), (1, 1), (0, 0, 0, 0), MatmulOptions.Default));
        Assert.Equal("conv2d: weight [4, 3, 1, 1] does not fit [out, 2, kh, kw] for input [1, 2, 3, 2] (channels last)", chans.Message);
        var tall = Assert.Throws<ArgumentException>(() => TowerOps.Conv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 4, 2, 4, 1), (1, 1), (0, 1, 0, 0), MatmulOptions.Default));
        Assert.Equal("conv2d: input [1, 2, 3, 2] padded (0|1, 0|0) is smaller than the kernel 4x1", tall.Message);
        var wide = Assert.Throws<ArgumentException>(() => TowerOps.Conv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 4, 2, 1, 5), (1, 1), (0, 0, 0, 1), MatmulOptions.Default));
        Assert.Equal("conv2d: input [1, 2, 3, 2] padded (0|0, 0|1) is smaller than the kernel 1x5", wide.Message);
        // exactly the kernel's size is one output, not a refusal
        var one = TowerOps.Conv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 4, 2, 2, 3), (1, 1), (0, 0, 0, 0), MatmulOptions.Default);
        Assert.Equal(new[] { 1, 1, 1, 4 }, one.Shape.ToArray());
    }

    [Fact]
    public void Blocked_reduction_adds_float32_blocks_in_ascending_order_and_refuses_what_it_cannot_multiply()
    {
        var a = Seq(5, 3, 10);                       // [M=3, K=10]
        var b = Seq(6, 10, 2);                       // [K=10, N=2]
        foreach (int block in new[] { 1, 3, 4, 9, 10, 11 })
        {
            var got = TowerOps.BlockedReductionMatmul(a, b, block, MatmulOptions.Default);
            Assert.Equal(new[] { 3, 2 }, got.Shape.ToArray());
            Assert.Equal(DType.Float32, got.DType);
            // the definition: one float32 chain per block from zero, the partials added in float32 in block order
            var want = new float[6];
            for (int lo = 0; lo < 10; lo += block)
            {
                var part = Matmul.Forward(a.Narrow(1, lo, Math.Min(block, 10 - lo)), b.Narrow(0, lo, Math.Min(block, 10 - lo))).ToFloatArray();
                for (int i = 0; i < 6; i++) want[i] = lo == 0 ? part[i] : want[i] + part[i];
            }
            Assert.Equal(want, got.ToFloatArray());
            Close(RefConv(a.ToFloatArray(), 1, 3, 1, 10, TransposeKN(b.ToFloatArray(), 10, 2), 2, 1, 1, (1, 1), (0, 0, 0, 0), false),
                got, 1e-5, $"blocked {block}");
        }
        var dt = Assert.Throws<ArgumentException>(() => TowerOps.BlockedReductionMatmul(a.To(DType.BFloat16), b, 4, MatmulOptions.Default));
        Assert.Equal("blocked-reduction matmul: float32 operands only, got bfloat16 and float32", dt.Message);
        var dt2 = Assert.Throws<ArgumentException>(() => TowerOps.BlockedReductionMatmul(a, b.To(DType.BFloat16), 4, MatmulOptions.Default));
        Assert.Equal("blocked-reduction matmul: float32 operands only, got float32 and bfloat16", dt2.Message);
        var k = Assert.Throws<ArgumentException>(() => TowerOps.BlockedReductionMatmul(a, Seq(6, 9, 2), 4, MatmulOptions.Default));
        Assert.Equal("blocked-reduction matmul: shapes [3, 10] and [9, 2] are not [M, K] x [K, N]", k.Message);
        var r1 = Assert.Throws<ArgumentException>(() => TowerOps.BlockedReductionMatmul(Seq(5, 30), b, 4, MatmulOptions.Default));
        Assert.Equal("blocked-reduction matmul: shapes [30] and [10, 2] are not [M, K] x [K, N]", r1.Message);
        var r2 = Assert.Throws<ArgumentException>(() => TowerOps.BlockedReductionMatmul(a, Seq(6, 10, 2, 1), 4, MatmulOptions.Default));
        Assert.Equal("blocked-reduction matmul: shapes [3, 10] and [10, 2, 1] are not [M, K] x [K, N]", r2.Message);
        var zero = Assert.Throws<ArgumentOutOfRangeException>(() => TowerOps.BlockedReductionMatmul(a, b, 0, MatmulOptions.Default));
        Assert.StartsWith("the reduction block must be at least one term", zero.Message);
        Assert.Equal(0, zero.ActualValue);
        // the conv's choice: reductionBlock 0 is one Matmul (one chain), > 0 the blocks
        Assert.Equal(Matmul.Forward(a, b).ToFloatArray(), TowerOps.ReduceMatmul(a, b, 0, MatmulOptions.Default).ToFloatArray());
        Assert.Equal(TowerOps.BlockedReductionMatmul(a, b, 1, MatmulOptions.Default).ToFloatArray(),
            TowerOps.ReduceMatmul(a, b, 1, MatmulOptions.Default).ToFloatArray());
    }

    // [K, N] -> [N, K] (the reference conv reads weights [out, in])
    private static float[] TransposeKN(float[] b, int k, int n)
    {
        var t = new float[k * n];
        for (int i = 0; i < k; i++) for (int j = 0; j < n; j++) t[j * k + i] = b[i * n + j];
        return t;
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Depthwise_conv2d_with_per_side_padding_and_per_axis_stride_matches_torch(DType dt)
    {
        var x = Seq(7, 2, 5, 7, 3);                  // [B=2, H=5, W=7, C=3]
        var w = Seq(8, 3, 1, 2, 3);                  // [C=3, 1, kh=2, kw=3]
        var y = TowerOps.DepthwiseConv2dChannelsLast(x.To(dt), w.To(dt), (1, 2), (1, 0, 2, 1));
        // Ho = (5 + 1 - 2) / 1 + 1 = 5, Wo = (7 + 3 - 3) / 2 + 1 = 4
        Assert.Equal(new[] { 2, 5, 4, 3 }, y.Shape.ToArray());
        Assert.Equal(dt, y.DType);
        var want = RefConv(x.To(dt).ToFloatArray(), 2, 5, 7, 3, w.To(dt).ToFloatArray(), 3, 2, 3, (1, 2), (1, 0, 2, 1), true);
        if (dt == DType.Float32) Close(want, y, 1e-6, "depthwise");
        else Assert.Equal(want.Select(v => BFloat16.ToFloat(BFloat16.FromFloat((float)v))).ToArray(), y.ToFloatArray());
        // the other axis strided, padded at the bottom: Ho = (5 + 2 - 2) / 2 + 1 = 3, Wo = (7 + 2 - 3) / 1 + 1 = 7
        var y2 = TowerOps.DepthwiseConv2dChannelsLast(x.To(dt), w.To(dt), (2, 1), (0, 2, 1, 1));
        Assert.Equal(new[] { 2, 3, 7, 3 }, y2.Shape.ToArray());
        var want2 = RefConv(x.To(dt).ToFloatArray(), 2, 5, 7, 3, w.To(dt).ToFloatArray(), 3, 2, 3, (2, 1), (0, 2, 1, 1), true);
        if (dt == DType.Float32) Close(want2, y2, 1e-6, "depthwise (2, 1)");
        else Assert.Equal(want2.Select(v => BFloat16.ToFloat(BFloat16.FromFloat((float)v))).ToArray(), y2.ToFloatArray());
    }

    [Fact]
    public void Depthwise_conv2d_refuses_a_weight_not_c_by_1_and_an_input_smaller_than_the_kernel()
    {
        var x = Seq(1, 1, 2, 3, 2);
        foreach (var (shape, shown) in new[] { (new[] { 2, 1, 3 }, "[2, 1, 3]"), (new[] { 3, 1, 1, 1 }, "[3, 1, 1, 1]"), (new[] { 2, 2, 1, 1 }, "[2, 2, 1, 1]") })
        {
            var ex = Assert.Throws<ArgumentException>(() => TowerOps.DepthwiseConv2dChannelsLast(x, Tensor.Zeros(DType.Float32, shape), (1, 1), (0, 0, 0, 0)));
            Assert.Equal($"depthwise conv2d: weight {shown} does not fit [2, 1, kh, kw] for input [1, 2, 3, 2] (channels last)", ex.Message);
        }
        var tall = Assert.Throws<ArgumentException>(() => TowerOps.DepthwiseConv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 2, 1, 4, 1), (1, 1), (1, 0, 0, 0)));
        Assert.Equal("depthwise conv2d: input [1, 2, 3, 2] padded (1|0, 0|0) is smaller than the kernel 4x1", tall.Message);
        var wide = Assert.Throws<ArgumentException>(() => TowerOps.DepthwiseConv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 2, 1, 1, 5), (1, 1), (0, 0, 1, 0)));
        Assert.Equal("depthwise conv2d: input [1, 2, 3, 2] padded (0|0, 1|0) is smaller than the kernel 1x5", wide.Message);
        var one = TowerOps.DepthwiseConv2dChannelsLast(x, Tensor.Zeros(DType.Float32, 2, 1, 2, 3), (1, 1), (0, 0, 0, 0));
        Assert.Equal(new[] { 1, 1, 1, 2 }, one.Shape.ToArray());
    }

    [Theory]
    [InlineData(5, 3, 3, 7)]
    [InlineData(3, 4, 7, 2)]
    public void Nearest_interpolation_reads_floor_of_the_float32_scale_per_axis(int h, int w, int ho, int wo)
    {
        var x = Seq(9, 2, h, w, 2);
        var y = TowerOps.InterpolateNearestChannelsLast(x.To(DType.BFloat16), ho, wo);
        Assert.Equal(new[] { 2, ho, wo, 2 }, y.Shape.ToArray());
        Assert.Equal(DType.BFloat16, y.DType);
        var src = x.To(DType.BFloat16).ToFloatArray();
        var want = new float[2 * ho * wo * 2];
        float sh = (float)h / ho, sw = (float)w / wo;
        for (int n = 0; n < 2; n++)
        for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
        for (int c = 0; c < 2; c++)
            want[((n * ho + oy) * wo + ox) * 2 + c] = src[((n * h + Math.Min((int)MathF.Floor(oy * sh), h - 1)) * w + Math.Min((int)MathF.Floor(ox * sw), w - 1)) * 2 + c];
        Assert.Equal(want, y.ToFloatArray());
    }

    [Fact]
    public void Average_pooling_means_each_kh_by_kw_window_and_drops_the_remainder_rows()
    {
        var x = Seq(10, 2, 5, 6, 2);                 // [B=2, H=5, W=6, C=2], windows 2x3: Ho = 2 (row 4 dropped), Wo = 2
        var y = TowerOps.AvgPoolChannelsLast(x, 2, 3);
        Assert.Equal(new[] { 2, 2, 2, 2 }, y.Shape.ToArray());
        var src = x.ToFloatArray();
        var want = new double[16];
        for (int n = 0; n < 2; n++)
        for (int oy = 0; oy < 2; oy++)
        for (int ox = 0; ox < 2; ox++)
        for (int c = 0; c < 2; c++)
        {
            double s = 0;
            for (int ky = 0; ky < 2; ky++) for (int kx = 0; kx < 3; kx++) s += src[((n * 5 + oy * 2 + ky) * 6 + ox * 3 + kx) * 2 + c];
            want[((n * 2 + oy) * 2 + ox) * 2 + c] = s / 6;
        }
        Close(want, y, 1e-6, "avg_pool2d");
        Assert.Equal(DType.BFloat16, TowerOps.AvgPoolChannelsLast(x.To(DType.BFloat16), 2, 3).DType);
    }

    [Fact]
    public void Causal_depthwise_conv1d_sums_the_k_steps_up_to_t_with_zeros_before_the_start()
    {
        var x = Seq(11, 2, 5, 3);                    // [B=2, T=5, C=3]
        var w = Seq(12, 3, 1, 3);                    // [C=3, 1, k=3]
        var y = TowerOps.DepthwiseCausalConv1d(x, w);
        Assert.Equal(new[] { 2, 5, 3 }, y.Shape.ToArray());
        var xs = x.ToFloatArray();
        var ws = w.ToFloatArray();
        var want = new double[30];
        for (int n = 0; n < 2; n++)
        for (int t = 0; t < 5; t++)
        for (int c = 0; c < 3; c++)
        {
            double s = 0;
            for (int j = 0; j < 3; j++) { int ti = t - 2 + j; if (ti >= 0) s += ws[c * 3 + j] * xs[(n * 5 + ti) * 3 + c]; }
            want[(n * 5 + t) * 3 + c] = s;
        }
        Close(want, y, 1e-6, "causal conv1d");
        Assert.Equal(DType.BFloat16, TowerOps.DepthwiseCausalConv1d(x.To(DType.BFloat16), w.To(DType.BFloat16)).DType);
        foreach (var (shape, shown) in new[] { (new[] { 3, 3 }, "[3, 3]"), (new[] { 2, 1, 3 }, "[2, 1, 3]"), (new[] { 3, 2, 3 }, "[3, 2, 3]") })
        {
            var ex = Assert.Throws<ArgumentException>(() => TowerOps.DepthwiseCausalConv1d(x, Tensor.Zeros(DType.Float32, shape)));
            Assert.Equal($"depthwise conv1d: weight {shown} does not fit [3, 1, k] for input [2, 5, 3]", ex.Message);
        }
    }

    [Fact]
    public void Glu_is_the_first_half_times_sigmoid_of_the_second_rounded_once()
    {
        var x = Seq(13, 2, 3, 8);                    // halves of 4
        var y = TowerOps.Glu(x.To(DType.BFloat16));
        Assert.Equal(new[] { 2, 3, 4 }, y.Shape.ToArray());
        Assert.Equal(DType.BFloat16, y.DType);
        var v = x.To(DType.BFloat16).ToFloatArray();
        var want = new float[24];
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < 4; j++)
                want[r * 4 + j] = v[r * 8 + j] * (1f / (1f + MathF.Exp(-v[r * 8 + 4 + j])));
        var got = y.ToFloatArray();
        for (int i = 0; i < 24; i++)
            Assert.True(Math.Abs(got[i] - want[i]) <= Math.Abs(want[i]) / 128 + 1e-6, $"glu[{i}]: {got[i]} vs {want[i]}");
        Close(want.Select(f => (double)f).ToArray(), TowerOps.Glu(x), 1e-6, "glu f32");
    }

    [Fact]
    public void Softplus_is_log1p_exp_up_to_20_and_x_itself_above()
    {
        var xs = new[] { -30f, -2f, 0f, 1.5f, 19.5f, 20f, 20.5f, 40f };
        var y = TowerOps.Softplus(Tensor.FromArray(xs, 2, 4)).ToFloatArray();
        for (int i = 0; i < xs.Length; i++)
        {
            float want = xs[i] > 20f ? xs[i] : (float)Math.Log(1.0 + Math.Exp(xs[i]));
            Assert.Equal(want, y[i]);
        }
        Assert.Equal(DType.BFloat16, TowerOps.Softplus(Tensor.FromArray(xs, 8).To(DType.BFloat16)).DType);
    }

    [Fact]
    public void Pad_dim1_appends_zero_rows_on_dim_1_only_and_returns_a_full_length_input_as_is()
    {
        var x = Seq(14, 2, 3, 2);
        Assert.Same(x, TowerOps.PadDim1(x, 3));
        var y = TowerOps.PadDim1(x, 5);
        Assert.Equal(new[] { 2, 5, 2 }, y.Shape.ToArray());
        var v = x.ToFloatArray();
        var got = y.ToFloatArray();
        for (int n = 0; n < 2; n++)
            for (int t = 0; t < 5; t++)
                for (int c = 0; c < 2; c++)
                    Assert.Equal(t < 3 ? v[(n * 3 + t) * 2 + c] : 0f, got[(n * 5 + t) * 2 + c]);
    }

    [Fact]
    public void Context_windows_hold_positions_u_times_w_minus_left_onwards_with_zeros_outside_the_sequence()
    {
        int b = 2, t = 5, n = 2, h = 3, u = 3, w = 2, ctx = 5, left = 3;   // window 0 starts 3 before the sequence, the last ends inside it
        var x = Seq(15, b, t, n, h);
        var y = TowerOps.ContextWindows(x, u, w, ctx, left);
        Assert.Equal(new[] { b, n, u, ctx, h }, y.Shape.ToArray());
        var v = x.ToFloatArray();
        var got = y.ToFloatArray();
        for (int bi = 0; bi < b; bi++)
        for (int ni = 0; ni < n; ni++)
        for (int ui = 0; ui < u; ui++)
        for (int c = 0; c < ctx; c++)
        for (int hi = 0; hi < h; hi++)
        {
            int pos = ui * w - left + c;
            float want = pos < 0 || pos >= t ? 0f : v[((bi * t + pos) * n + ni) * h + hi];
            Assert.Equal(want, got[(((bi * n + ni) * u + ui) * ctx + c) * h + hi]);
        }
    }
}
