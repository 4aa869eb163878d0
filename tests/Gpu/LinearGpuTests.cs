using Harness.Engine.Cuda;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Gpu;

/// <summary>
/// Linear's bf16-with-bias path on the GPU (Qwen2-VL's q/k/v projections) converted the whole weight to float32 on every
/// call: 12 MiB per Qwen2-VL-2B layer per decode step. The float32 W^T and b are made once and kept, outside any CUDA
/// graph step's arena (the arena is reused by the next step, so a cached copy made there would be overwritten): the
/// outputs stay the per-call formula's bit for bit, the first call made inside an arena included.
/// </summary>
[Trait("Category", "GPU")]
public sealed class LinearGpuTests
{
    [Fact]
    public void A_bf16_linear_with_a_bias_converts_its_weight_once_even_when_first_called_in_a_step_arena()
    {
        var device = GpuTests.RequireGpu();
        const int k = 1536, n = 256;
        var w = Tensor.Uniform(DType.BFloat16, 31, -1f, 1f, n, k).ToDevice(device);
        var b = Tensor.Uniform(DType.BFloat16, 32, -1f, 1f, n).ToDevice(device);
        var x = Tensor.Uniform(DType.BFloat16, 33, -1f, 1f, 1, k).ToDevice(device);
        // The formula Linear ran on every call before (float32 GEMM, float32 bias, one rounding to bf16).
        var expected = Elementwise.Add(Matmul.Forward(x.To(DType.Float32), w.T().To(DType.Float32)), b.To(DType.Float32))
            .To(DType.BFloat16).ToHost().ToBFloat16Bits();

        var linear = new Linear(w, b);
        using var arena = new CudaArena(device, 64L << 20);
        ushort[] first;
        using (arena.Use()) first = linear.Forward(x).ToHost().ToBFloat16Bits();   // the graph decoder's eager step
        Assert.Equal(expected, first);
        arena.Reset();
        using (arena.Use()) CudaTensors.Zeros(device, DType.Float32, (int)(arena.Capacity / 4));   // the next step writes the whole arena
        for (int i = 0; i < 3; i++) Assert.Equal(expected, linear.Forward(x).ToHost().ToBFloat16Bits());
        Assert.Equal(1, linear.Float32Conversions);
    }
}
