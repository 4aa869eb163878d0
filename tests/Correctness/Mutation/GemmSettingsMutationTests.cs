using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// HARNESS_GEMM_KERNEL and HARNESS_BF16_KERNEL as the host configures them (<see cref="EngineSettings"/>), under a flow's
/// own forcing: the kernel choice reads the flow's force first, then the settings, then the CPU's default (Kernels/Gemm
/// GemmKernel.cs, Bf16DotKernel.cs). The test process never sets either variable, so no other test sees the settings'
/// arm; a mutant that drops it or reads it before the flow's force survives them. Serial: it configures the process.
/// </summary>
[Collection(SerialCollection.Name)]
public class GemmSettingsMutationTests
{
    [Fact]
    public void The_configured_kernels_apply_unless_the_flow_forces_another()
    {
        var saved = EngineSettings.Current;
        try
        {
            EngineSettings.Configure(saved with { Bf16Native = false, GemmKernel = GemmKernel.Scalar });
            Assert.Equal(GemmKernel.Scalar, GemmKernelSelector.Current);
            Assert.Equal("scalar 4x8", Gemm.KernelName);
            Assert.False(Bf16DotKernel.UseNative(1));
            Assert.Equal("widened in registers (forced)", Gemm.Bf16KernelName);
            using (Gemm.ForceKernel(GemmKernel.Avx2)) Assert.Equal(GemmKernel.Avx2, GemmKernelSelector.Current);
            if (Bf16DotKernel.IsSupported)
                using (Gemm.ForceNativeBf16(true))
                {
                    Assert.True(Bf16DotKernel.UseNative(1));
                    Assert.Equal("native vdpbf16ps (forced)", Gemm.Bf16KernelName);
                }
            EngineSettings.Configure(saved with { Bf16Native = true, GemmKernel = GemmKernel.Auto });
            Assert.Equal(GemmKernelSelector.Best, GemmKernelSelector.Current);
            Assert.True(Bf16DotKernel.UseNative(1));
            Assert.Equal("native vdpbf16ps (forced)", Gemm.Bf16KernelName);
            using (Gemm.ForceNativeBf16(false)) Assert.False(Bf16DotKernel.UseNative(1));
        }
        finally
        {
            EngineSettings.Configure(saved);
        }
    }
}
