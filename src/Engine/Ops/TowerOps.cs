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
    public static Tensor Conv2dChannelsLast(Tensor x, Tensor weight, (int H, int W) stride, (int Top, int Bottom, int Left, int Right) pad,
        MatmulOptions matmul)
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
        return Matmul.Forward(patches, weight.Reshape(cout, k).T(), matmul).Reshape(b, ho, wo, cout);
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
