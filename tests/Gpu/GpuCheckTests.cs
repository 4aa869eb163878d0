using Harness.Bench;
using Harness.Engine.Cuda;

namespace Harness.Tests.Gpu;

/// <summary>
/// Each check of `harness check-gpu` (interop, cuBLAS and invariant GEMM, every NVRTC kernel, batch invariance, the tiny
/// Llama GPU vs CPU, graph decoding) as one test, runnable with no dotnet installed:
/// `harness-gpu-tests -junit results.xml`. Where no GPU is usable each test is skipped with the reason; with
/// HARNESS_REQUIRE_GPU=1 it fails instead (ci/gpu-test.sh sets it).
/// </summary>
public sealed class GpuCheckTests
{
    public static TheoryData<string> CheckNames()
    {
        var data = new TheoryData<string>();
        foreach (var (name, _) in GpuSelfCheck.Checks) data.Add(name);
        return data;
    }

    [Theory]
    [MemberData(nameof(CheckNames))]
    public void Check(string name)
    {
        if (!CudaDevice.TryGet(out var device, out var reason))
        {
            if (Environment.GetEnvironmentVariable("HARNESS_REQUIRE_GPU") is "1")
                Assert.Fail($"HARNESS_REQUIRE_GPU=1 but no GPU is usable: {reason}");
            Assert.Skip($"no usable GPU: {reason}");
        }
        Assert.Null(GpuSelfCheck.Checks.Single(c => c.Name == name).Run(device!));
    }
}
