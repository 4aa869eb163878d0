using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Kernels.GemmTestSupport;

namespace Harness.Tests.Correctness.Kernels;

/// <summary>
/// Linear's low-precision path with a bias (torch's addmm: float32 GEMM, float32 bias, one rounding) converted the whole
/// weight to float32 on every call (<c>Weight.T().To(Float32)</c>): 12 MiB per Qwen2-VL-2B layer per decode step on the
/// GPU. The float32 W^T and b are now made once per layer and kept; the outputs are the per-call formula's bit for bit.
/// (On the host this path runs for float16; bfloat16 takes the packed weight there, so the GPU suite checks bf16.)
/// </summary>
public class LinearFloat32CopyTests
{
    // The formula Linear.Unpacked ran on every call before the cache (F.linear with a bias in bf16/fp16).
    private static Tensor PerCallFormula(Tensor x, Tensor w, Tensor b) =>
        Elementwise.Add(Matmul.Forward(x.To(DType.Float32), w.T().To(DType.Float32)), b.To(DType.Float32)).To(x.DType);

    [Fact]
    public void A_half_precision_linear_with_a_bias_converts_its_weight_once_and_keeps_the_per_call_bits()
    {
        const int k = 96, n = 40;
        var w = Tensor.Uniform(DType.Float16, 11, -1f, 1f, n, k);
        var b = Tensor.Uniform(DType.Float16, 12, -1f, 1f, n);
        var linear = new Linear(w, b);
        Assert.Equal(0, linear.Float32Conversions);
        foreach (var (rows, seed) in new[] { (1, 13UL), (7, 14UL), (1, 15UL), (3, 16UL) })
        {
            var x = Tensor.Uniform(DType.Float16, seed, -1f, 1f, rows, k);
            var y = linear.Forward(x);
            Assert.Equal(DType.Float16, y.DType);
            AssertBitsEqual(PerCallFormula(x, w, b).To(DType.Float32).ToFloatArray(), y.To(DType.Float32).ToFloatArray(), $"M={rows}");
            var buffer = Tensor.Zeros(DType.Float16, rows, n);                       // the decode step's output buffer path
            linear.Forward(x, buffer);
            Assert.True(buffer.BitwiseEquals(y));
        }
        Assert.Equal(1, linear.Float32Conversions);                                 // 8 forwards, one float32 copy
    }

    [Fact]
    public void A_float32_linear_or_one_without_a_bias_makes_no_float32_copy()
    {
        var x = Tensor.Uniform(DType.Float16, 21, -1f, 1f, 2, 16);
        var noBias = new Linear(Tensor.Uniform(DType.Float16, 22, -1f, 1f, 8, 16));
        noBias.Forward(x);
        Assert.Equal(0, noBias.Float32Conversions);
        var fp32 = new Linear(Tensor.Uniform(DType.Float32, 23, -1f, 1f, 8, 16), Tensor.Uniform(DType.Float32, 24, -1f, 1f, 8));
        fp32.Forward(x.To(DType.Float32));
        Assert.Equal(0, fp32.Float32Conversions);
    }
}
