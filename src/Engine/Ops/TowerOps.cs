using Harness.Engine.Tensors;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// Torch ops that Gemma4's towers use and the engine has no more general op for, each computed by its operand's backend
/// (<see cref="IOpBackend"/>: the host loop below, or a CUDA kernel of CudaOps), so the tower code does not branch on the device.
/// Each is computed in float32 from the input's values and rounded once to the input dtype (torch's CPU kernels for bf16
/// accumulate in float32 and round once).
/// </summary>
public static class TowerOps
{
    /// <summary>
    /// nn.Conv2d(in, out, kernel 3x3, stride 2, padding 1, bias=False) on a channels-last input, as im2col + one
    /// <see cref="Matmul"/>: patches [B*Ho*Wo, in*9] (ordered (c, kh, kw), the weight's flattening) @ weight [out, in*9]^T.
    /// Equals torch's conv2d up to float32 summation order. Input [B, H, W, in], output [B, Ho, Wo, out] with
    /// Ho = ceil(H/2), Wo = ceil(W/2).
    /// </summary>
    public static Tensor Conv3x3Stride2ChannelsLast(Tensor x, Tensor weight, MatmulOptions matmul)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), cin = x.Size(3);
        int cout = weight.Size(0);
        if (weight.Rank != 4 || weight.Size(1) != cin || weight.Size(2) != 3 || weight.Size(3) != 3)
            throw new ArgumentException($"conv2d: weight {Shape.Format(weight.Shape)} does not fit [out, {cin}, 3, 3] for input {Shape.Format(x.Shape)} (channels last)");
        int ho = (h + 2 - 3) / 2 + 1, wo = (w + 2 - 3) / 2 + 1, k = cin * 9;
        var patches = OpBackend.Of(x).Im2Col3x3S2(x);                         // [B*Ho*Wo, in*9], x's dtype
        var wFlat = weight.Reshape(cout, k).T();                              // [in*9, out]
        return Matmul.Forward(patches, wFlat, matmul).Reshape(b, ho, wo, cout);
    }

    /// <summary>
    /// F.pad(x, (left, right, top, bottom)) then nn.Conv2d(in, out, kernel (kh, kw), stride, bias=False) on a channels-last
    /// input (Gemma3n's subsampling convs: time padded 0 | kh - 1, frequency 1 | 1), as im2col + one <see cref="Matmul"/>:
    /// patches [B*Ho*Wo, in*kh*kw] (ordered (c, kh, kw), the weight's flattening) @ weight^T. Input [B, H, W, in], output
    /// [B, Ho, Wo, out], Ho = (H + top + bottom - kh) / sh + 1 (likewise Wo). The host's loop only: a device input is an
    /// error naming the op (Gemma3n's audio tower runs on the host, as the towers of `compare --device cuda` do).
    /// </summary>
    /// <param name="reductionBlock">0: one <see cref="Matmul"/> (one FMA chain over in*kh*kw); else the reduction in blocks
    /// of this many terms (<see cref="BlockedReductionMatmul"/>).</param>
    public static Tensor Conv2dChannelsLast(Tensor x, Tensor weight, (int H, int W) stride, (int Top, int Bottom, int Left, int Right) pad,
        MatmulOptions matmul, int reductionBlock = 0)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), cin = x.Size(3);
        if (weight.Rank != 4 || weight.Size(1) != cin)
            throw new ArgumentException($"conv2d: weight {Shape.Format(weight.Shape)} does not fit [out, {cin}, kh, kw] for input {Shape.Format(x.Shape)} (channels last)");
        if (OpBackend.Of(x) is not HostOps)
            throw new NotSupportedException($"conv2d {weight.Size(2)}x{weight.Size(3)} stride {stride.H}x{stride.W} has no kernel on {OpBackend.Of(x).Name}: it runs on the host");
        int cout = weight.Size(0), kh = weight.Size(2), kw = weight.Size(3);
        int ho = (h + pad.Top + pad.Bottom - kh) / stride.H + 1, wo = (w + pad.Left + pad.Right - kw) / stride.W + 1, k = cin * kh * kw;
        if (ho < 1 || wo < 1)
            throw new ArgumentException($"conv2d: input {Shape.Format(x.Shape)} padded ({pad.Top}|{pad.Bottom}, {pad.Left}|{pad.Right}) is smaller than the kernel {kh}x{kw}");
        var patches = HostOps.Im2Col(x, kh, kw, stride, (pad.Top, pad.Left), ho, wo);   // [B*Ho*Wo, in*kh*kw], x's dtype
        var wFlat = weight.Reshape(cout, k).T();                                          // [in*kh*kw, out]
        return ReduceMatmul(patches, wFlat, reductionBlock, matmul).Reshape(b, ho, wo, cout);
    }

    /// <summary>A conv's [M, K] x [K, N]: reductionBlock 0, one <see cref="Matmul"/> (one FMA chain over K); else
    /// <see cref="BlockedReductionMatmul"/> with blocks of that many terms.</summary>
    public static Tensor ReduceMatmul(Tensor a, Tensor b, int reductionBlock, MatmulOptions matmul) =>
        reductionBlock > 0 ? BlockedReductionMatmul(a, b, reductionBlock, matmul) : Matmul.Forward(a, b, matmul);

    /// <summary>
    /// [M, K] x [K, N] in float32 with K reduced in blocks of <paramref name="block"/> terms: each block one FMA chain from
    /// zero (one <see cref="Matmul"/> of the K slices), the partial sums added in float32 in ascending block order. A
    /// convolution's reduction over in_channels x kernel is long (MobileNetV5's MultiQueryAttention output projection sums
    /// heads x value_dim = 768 / 1536 terms; its EdgeResidual 3x3 convs 9 x channels); the engine's GEMM reduces each output
    /// in one FMA chain over all K, whose rounding error grows about as sqrt(K), while torch's CPU convolution (oneDNN)
    /// reduces in blocks: at K = 1536 a single chain was measured 1.8x further from float64 than torch's conv2d, blocks of
    /// 64 0.5x (tests/Correctness/Gemma3n/MobileNetV5PrecisionTests.cs). The blocks depend on K alone, so an output's bits
    /// do not depend on the batch (batch invariance holds). Float32 only: in bfloat16 the one rounding of the output
    /// (2^-8) dwarfs the chain's error, and the caller keeps one Matmul. K &lt;= block is one Matmul.
    /// </summary>
    /// <param name="a">[M, K] float32.</param>
    /// <param name="b">[K, N] float32.</param>
    /// <returns>[M, N] float32.</returns>
    public static Tensor BlockedReductionMatmul(Tensor a, Tensor b, int block, MatmulOptions matmul)
    {
        if (a.DType != DType.Float32 || b.DType != DType.Float32)
            throw new ArgumentException($"blocked-reduction matmul: float32 operands only, got {a.DType.TorchName()} and {b.DType.TorchName()}");
        if (a.Rank != 2 || b.Rank != 2 || a.Size(1) != b.Size(0))
            throw new ArgumentException($"blocked-reduction matmul: shapes {Shape.Format(a.Shape)} and {Shape.Format(b.Shape)} are not [M, K] x [K, N]");
        if (block < 1) throw new ArgumentOutOfRangeException(nameof(block), block, "the reduction block must be at least one term");
        int k = a.Size(1);
        if (k <= block) return Matmul.Forward(a, b, matmul);
        float[]? sum = null;
        for (int lo = 0; lo < k; lo += block)
        {
            int len = Math.Min(block, k - lo);
            var partial = Matmul.Forward(a.Narrow(1, lo, len), b.Narrow(0, lo, len), matmul).ToFloatArray();   // [M, N] one chain over the block
            if (sum is null) sum = partial;
            else System.Numerics.Tensors.TensorPrimitives.Add(sum, partial, sum);
        }
        return Tensor.FromArray(sum!, a.Size(0), b.Size(1));
    }

    /// <summary>
    /// F.pad(x, (left, right, top, bottom)) then nn.Conv2d(C, C, kernel (kh, kw), stride, groups=C, bias=False): the depthwise
    /// convs of timm's MobileNetV5 (UIR dw_start / dw_mid, the MQA key/value down convs), on a channels-last input:
    /// y[b, oy, ox, c] = sum_(ky,kx) w[c, 0, ky, kx] * x[b, oy*sh - top + ky, ox*sw - left + kx, c] (zeros outside), summed
    /// in float32 and rounded once to x's dtype (torch's CPU kernel for bf16 accumulates in float32). Input [B, H, W, C],
    /// weight [C, 1, kh, kw], output [B, Ho, Wo, C] with Ho = (H + top + bottom - kh) / sh + 1. The host's loop only.
    /// </summary>
    public static Tensor DepthwiseConv2dChannelsLast(Tensor x, Tensor weight, (int H, int W) stride, (int Top, int Bottom, int Left, int Right) pad)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), c = x.Size(3);
        if (weight.Rank != 4 || weight.Size(0) != c || weight.Size(1) != 1)
            throw new ArgumentException($"depthwise conv2d: weight {Shape.Format(weight.Shape)} does not fit [{c}, 1, kh, kw] for input {Shape.Format(x.Shape)} (channels last)");
        if (OpBackend.Of(x) is not HostOps)
            throw new NotSupportedException($"depthwise conv2d {weight.Size(2)}x{weight.Size(3)} has no kernel on {OpBackend.Of(x).Name}: it runs on the host");
        int kh = weight.Size(2), kw = weight.Size(3);
        int ho = (h + pad.Top + pad.Bottom - kh) / stride.H + 1, wo = (w + pad.Left + pad.Right - kw) / stride.W + 1;
        if (ho < 1 || wo < 1)
            throw new ArgumentException($"depthwise conv2d: input {Shape.Format(x.Shape)} padded ({pad.Top}|{pad.Bottom}, {pad.Left}|{pad.Right}) is smaller than the kernel {kh}x{kw}");
        var src = x.ToFloatArray();
        var wt = weight.ToFloatArray();                                   // [C, 1, kh, kw]
        var dst = new float[b * ho * wo * c];
        var acc = new float[c];
        for (int n = 0; n < b; n++)
        for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
        {
            Array.Clear(acc);
            for (int ky = 0; ky < kh; ky++)
            {
                int iy = oy * stride.H - pad.Top + ky;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; kx++)
                {
                    int ix = ox * stride.W - pad.Left + kx;
                    if (ix < 0 || ix >= w) continue;
                    int row = ((n * h + iy) * w + ix) * c, tap = ky * kw + kx;
                    for (int ch = 0; ch < c; ch++) acc[ch] += wt[ch * kh * kw + tap] * src[row + ch];
                }
            }
            acc.CopyTo(dst, ((n * ho + oy) * wo + ox) * c);
        }
        return Tensor.FromArray(dst, b, ho, wo, c).To(x.DType);
    }

    /// <summary>
    /// F.interpolate(x, size=(Ho, Wo), mode="nearest") on a channels-last input: output row oy reads input row
    /// min(floor(oy * (H / Ho)), H - 1) with the scale in float32 (torch's nearest_idx), likewise columns. Exact (a gather).
    /// [B, H, W, C] -> [B, Ho, Wo, C].
    /// </summary>
    public static Tensor InterpolateNearestChannelsLast(Tensor x, int ho, int wo)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), c = x.Size(3);
        float sh = (float)h / ho, sw = (float)w / wo;
        var src = x.ToFloatArray();
        var dst = new float[b * ho * wo * c];
        for (int n = 0; n < b; n++)
        for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
        {
            int iy = Math.Min((int)MathF.Floor(oy * sh), h - 1), ix = Math.Min((int)MathF.Floor(ox * sw), w - 1);
            Array.Copy(src, ((n * h + iy) * w + ix) * c, dst, ((n * ho + oy) * wo + ox) * c, c);
        }
        return Tensor.FromArray(dst, b, ho, wo, c).To(x.DType);
    }

    /// <summary>
    /// F.avg_pool2d(x, kernel_size=(kh, kw), stride=(kh, kw)) (no padding) on a channels-last input: each output the mean of
    /// its kh x kw window, summed in float32 and rounded once. [B, H, W, C] -> [B, H / kh, W / kw, C].
    /// </summary>
    public static Tensor AvgPoolChannelsLast(Tensor x, int kh, int kw)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), c = x.Size(3), ho = h / kh, wo = w / kw;
        var src = x.ToFloatArray();
        var dst = new float[b * ho * wo * c];
        for (int n = 0; n < b; n++)
        for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
        {
            int o = ((n * ho + oy) * wo + ox) * c;
            for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++)
            {
                int i = ((n * h + oy * kh + ky) * w + ox * kw + kx) * c;
                for (int ch = 0; ch < c; ch++) dst[o + ch] += src[i + ch];
            }
            for (int ch = 0; ch < c; ch++) dst[o + ch] /= kh * kw;
        }
        return Tensor.FromArray(dst, b, ho, wo, c).To(x.DType);
    }

    /// <summary>
    /// Gemma4AudioCausalConv1d with groups = channels (depthwise), no bias: F.pad(x, (k-1, 0)) then conv1d, i.e.
    /// y[b, t, c] = sum_j w[c, 0, j] * x[b, t - (k-1) + j, c] (zero before t = 0). Time-major input [B, T, C], output [B, T, C].
    /// </summary>
    public static Tensor DepthwiseCausalConv1d(Tensor x, Tensor weight)
    {
        int b = x.Size(0), t = x.Size(1), c = x.Size(2);
        if (weight.Rank != 3 || weight.Size(0) != c || weight.Size(1) != 1)
            throw new ArgumentException($"depthwise conv1d: weight {Shape.Format(weight.Shape)} does not fit [{c}, 1, k] for input {Shape.Format(x.Shape)}");
        return OpBackend.Of(x).DepthwiseCausalConv1d(x, weight);
    }

    /// <summary>nn.functional.glu(x, dim=-1): a * sigmoid(g) with [a | g] the two halves of the last dim, rounded once.</summary>
    public static Tensor Glu(Tensor x)
    {
        int d = x.Size(-1) / 2;
        var a = OpSupport.Float32(x.Narrow(-1, 0, d));
        var g = OpSupport.Float32(x.Narrow(-1, d, d));
        return Elementwise.Mul(a, Elementwise.Sigmoid(g)).To(x.DType);
    }

    /// <summary>F.softplus(x) (beta 1, threshold 20): log1p(exp(x)), x itself above 20; in x's dtype, rounded once.</summary>
    public static Tensor Softplus(Tensor x) => OpBackend.Of(x).Softplus(x);

    /// <summary>x zero-padded at the end of dim 1 to length <paramref name="length"/>.</summary>
    public static Tensor PadDim1(Tensor x, int length)
    {
        int t = x.Size(1);
        if (t == length) return x;
        var shape = x.ShapeArray;
        shape[1] = length - t;
        return Tensor.Cat([x, Tensor.ZerosLike(x, x.DType, shape)], 1);
    }

    /// <summary>
    /// _extract_block_context: F.pad on time by (left, right + W - 1), unfold(1, C, W), movedim(-1, 2): window u holds positions
    /// u*W - left .. u*W - left + C - 1 (zeros outside [0, T)). [B, T, N, H] -> [B, N, U, C, H].
    /// </summary>
    public static Tensor ContextWindows(Tensor x, int u, int w, int ctx, int left) => OpBackend.Of(x).ContextWindows(x, u, w, ctx, left);
}

/// <summary>The host's tower loops.</summary>
internal sealed partial class HostOps
{
    public Tensor Im2Col3x3S2(Tensor x)
    {
        int h = x.Size(1), w = x.Size(2);
        return Im2Col(x, 3, 3, (2, 2), (1, 1), (h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
    }

    /// <summary>
    /// The host's im2col of a channels-last input [B, H, W, in] for a kh x kw kernel at this stride, padded by (top, left)
    /// (zeros outside the input; the bottom and right padding is in Ho and Wo): patches [B*Ho*Wo, in*kh*kw], each row
    /// ordered (c, ky, kx) as the weight [out, in, kh, kw] flattens, in x's dtype (exact: every value comes from x).
    /// </summary>
    internal static Tensor Im2Col(Tensor x, int kh, int kw, (int H, int W) stride, (int Top, int Left) pad, int ho, int wo)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), cin = x.Size(3), k = cin * kh * kw;
        var src = x.ToFloatArray();
        var cols = new float[b * ho * wo * k];
        for (int n = 0; n < b; n++)
        for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
        {
            int row = ((n * ho + oy) * wo + ox) * k;
            for (int c = 0; c < cin; c++)
            for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++)
            {
                int iy = oy * stride.H - pad.Top + ky, ix = ox * stride.W - pad.Left + kx;
                cols[row + (c * kh + ky) * kw + kx] = iy < 0 || iy >= h || ix < 0 || ix >= w ? 0f : src[((n * h + iy) * w + ix) * cin + c];
            }
        }
        return Tensor.FromArray(cols, b * ho * wo, k).To(x.DType);
    }

    public Tensor DepthwiseCausalConv1d(Tensor x, Tensor weight)
    {
        int b = x.Size(0), t = x.Size(1), c = x.Size(2);
        int k = weight.Size(2);
        var src = x.ToFloatArray();
        var wt = weight.ToFloatArray();
        var y = new float[src.Length];
        for (int n = 0; n < b; n++)
        for (int i = 0; i < t; i++)
        for (int ch = 0; ch < c; ch++)
        {
            float acc = 0f;
            for (int j = 0; j < k; j++)
            {
                int ti = i - (k - 1) + j;
                if (ti >= 0) acc += wt[ch * k + j] * src[(n * t + ti) * c + ch];
            }
            y[(n * t + i) * c + ch] = acc;
        }
        return Tensor.FromArray(y, b, t, c).To(x.DType);
    }

    public Tensor Softplus(Tensor x)
    {
        var v = x.ToFloatArray();
        for (int i = 0; i < v.Length; i++) v[i] = v[i] > 20f ? v[i] : (float)Math.Log(1.0 + Math.Exp(v[i]));
        return Tensor.FromArray(v, x.ShapeArray).To(x.DType);
    }

    public Tensor ContextWindows(Tensor x, int u, int w, int ctx, int left)
    {
        int b = x.Size(0), t = x.Size(1), n = x.Size(2), h = x.Size(3);
        var src = x.Contiguous().Span<float>();
        var dst = new float[b * n * u * ctx * h];
        for (int bi = 0; bi < b; bi++)
        for (int ni = 0; ni < n; ni++)
        for (int ui = 0; ui < u; ui++)
        for (int c = 0; c < ctx; c++)
        {
            int pos = ui * w - left + c;
            if (pos < 0 || pos >= t) continue;
            src.Slice(((bi * t + pos) * n + ni) * h, h).CopyTo(dst.AsSpan((((bi * n + ni) * u + ui) * ctx + c) * h, h));
        }
        return Tensor.FromArray(dst, b, n, u, ctx, h);
    }
}
