using Harness.Bench;
using Harness.Engine.Cuda;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Cuda;

/// <summary>
/// The engine on a GPU: each check of `harness check-gpu` (interop, cuBLAS and invariant GEMM, every NVRTC kernel, the tiny
/// Llama GPU vs CPU) as one test. Trait Category=GPU. Where no GPU is usable the tests skip with the reason (the library
/// search or the driver's answer); with HARNESS_REQUIRE_GPU=1 they fail instead, so a GPU runner cannot pass by skipping.
/// </summary>
[Trait("Category", "GPU")]
public sealed class GpuTests
{
    public static TheoryData<string> CheckNames()
    {
        var data = new TheoryData<string>();
        foreach (var (name, _) in GpuSelfCheck.Checks) data.Add(name);
        return data;
    }

    internal static CudaDevice RequireGpu()
    {
        if (CudaDevice.TryGet(out var device, out var reason)) return device!;
        if (Environment.GetEnvironmentVariable("HARNESS_REQUIRE_GPU") is "1")
            throw new InvalidOperationException($"HARNESS_REQUIRE_GPU=1 but no GPU is usable: {reason}");
        Skip.If(true, $"no usable GPU: {reason}");
        return null!;
    }

    [SkippableTheory]
    [MemberData(nameof(CheckNames))]
    public void Check(string name)
    {
        var device = RequireGpu();
        var run = GpuSelfCheck.Checks.Single(c => c.Name == name).Run;
        Assert.Null(run(device));
    }
}

/// <summary>What a machine without a GPU says, and what a device tensor says on one; each skips (with the reason) on the
/// machine where it has nothing to check, never passing vacuously.</summary>
public sealed class GpuUnavailableTests
{
    [SkippableFact]
    public void The_reason_names_what_was_searched()
    {
        var found = CudaDevice.TryGet(out _, out var reason);
        Skip.If(found, "a GPU is usable here: there is no unavailability reason to check");
        Assert.Contains("not found; searched:", reason);
        Assert.Contains("HARNESS_CUDA_LIB_DIR", reason);
    }

    [SkippableFact]
    public void A_device_tensor_refuses_host_reads_with_the_fix()
    {
        var device = GpuTests.RequireGpu();
        var t = Tensor.FromArray(new float[] { 1, 2 }, 2).ToDevice(device);
        var e = Assert.Throws<InvalidOperationException>(() => t.Span<float>());
        Assert.Contains("ToHost()", e.Message);
    }

    /// <summary>Issue 20: Ops.Clamp made a host float32 copy and buffer of a device tensor before taking its CUDA branch (seven
    /// times per Gemma4 audio layer). A device clamp allocates no host storage of the tensor's size.</summary>
    [SkippableFact]
    public void A_device_clamp_allocates_no_host_copy_of_its_input()
    {
        var device = GpuTests.RequireGpu();
        var x = Tensor.FromArray(new float[1 << 18], 1 << 18).ToDevice(device);      // 1 MiB of float32
        Harness.Engine.Ops.Elementwise.Clamp(x, -1, 1);                                // warm-up: kernels compiled, pools made
        long before = GC.GetAllocatedBytesForCurrentThread();
        var y = Harness.Engine.Ops.Elementwise.Clamp(x, -1, 1);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(y.IsCuda);
        Assert.True(allocated < 64 * 1024, $"a device clamp allocated {allocated} bytes on the host (the input is 1 MiB)");
    }
}
