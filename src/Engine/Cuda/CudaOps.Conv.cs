using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>The convolution drivers of the Gemma4 towers: im2col of the 3x3 stride-2 conv, depthwise causal conv1d.</summary>
public static partial class CudaOps
{
    /// <summary>im2col of Conv2d(3x3, stride 2, padding 1) on channels-last x [B, H, W, C] -> [B*Ho*Wo, C*9] (Ho = ceil(H/2)).</summary>
    public static Tensor Im2Col3x3S2(Tensor x)
    {
        var device = FirstDeviceOf("im2col3x3s2", x);
        var xc = x.Contiguous();
        int b = x.Size(0), h = x.Size(1), w = x.Size(2), c = x.Size(3);
        int ho = (h + 2 - 3) / 2 + 1, wo = (w + 2 - 3) / 2 + 1;
        var y = CudaTensors.Empty(device, x.DType, b * ho * wo, c * 9);
        long n = y.NumEl;
        var elem = ElemType(x.DType);
        var f = device.Function("im2col3x3s2/" + elem, "im2col3x3s2", () => CudaSource.Prelude + ConvKernels.Im2Col3x3S2.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(xc).Ptr(y).Add(b).Add(h).Add(w).Add(c).Add(ho).Add(wo).Add(n);
        args.Launch(device, f, "im2col3x3s2", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>Depthwise causal conv1d: x [B, T, C], weight [C, 1, K] -> [B, T, C] in x's dtype (float32 sums, one rounding).</summary>
    public static Tensor DepthwiseCausalConv1d(Tensor x, Tensor weight)
    {
        var device = FirstDeviceOf("dw_causal_conv1d", x, weight);
        var xc = x.Contiguous();
        var wc = weight.ToDevice(device).Contiguous();
        int t = x.Size(1), c = x.Size(2), k = weight.Size(2);
        var y = CudaTensors.Empty(device, x.DType, x.ShapeArray);
        long n = y.NumEl;
        var f = device.Function($"dw_causal_conv1d/{CudaSource.Token(x.DType)}/{CudaSource.Token(wc.DType)}", "dw_causal_conv1d",
            () => CudaSource.Instantiate(ConvKernels.DepthwiseCausalConv1d, x.DType, x.DType, wc.DType));
        using var args = new KernelArgs().Ptr(xc).Ptr(wc).Ptr(y).Add(t).Add(c).Add(k).Add(n);
        args.Launch(device, f, "dw_causal_conv1d", GridFor(device, n), (Threads, 1, 1));
        return y;
    }
}
