using Harness.Comparison;
using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Layers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// The packed Linear (issue 15) against torch.matmul(x, W.T) in bfloat16 on the CPU: float32 accumulation and one
/// rounding to bf16 on both sides, so elements agree to the named policy bfloat16-gemm (neighbouring bf16 values where the
/// float32 sums straddle a rounding boundary). Every path: the native vdpbf16ps kernel where the CPU has it, the bf16
/// panels widened in registers, skinny (M &lt;= 8) and blocked, normal and batch-invariant mode.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public class LiveLinearTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(40)]
    public void Packed_bf16_linear_matches_torch_matmul(int m)
    {
        var reference = LiveReference.Client();
        const int k = 301, n = 70;
        var w = Tensor.Randn(DType.BFloat16, 11, n, k);
        var x = Tensor.Randn(DType.BFloat16, 12, m, k);
        var expected = reference.Matmul(x, w.T());
        var linear = new Linear(w);
        var variants = new List<(string Name, bool? Native, bool Invariant)> { ("widened", false, false), ("widened, batch-invariant", false, true) };
        if (Gemm.NativeBf16UnsupportedReason is null) variants.Add(("native vdpbf16ps", true, false));
        else output.WriteLine($"native bf16 kernel not checked: {Gemm.NativeBf16UnsupportedReason}");
        foreach (var (name, native, invariant) in variants)
        {
            using var mode = ComputeSettings.UseBatchInvariant(invariant);
            using var force = native is bool b && Gemm.NativeBf16UnsupportedReason is null ? Gemm.ForceNativeBf16(b) : null;
            var r = TensorComparer.Compare($"Linear bf16 [{m},{k}] x [{n},{k}]^T ({name})", linear.Forward(x), expected, Tolerances.GemmFor(DType.BFloat16));
            output.WriteLine(r.ToString());
            Assert.True(r.Passed, r.ToString());
        }
    }
}
