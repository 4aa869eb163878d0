using Harness.Bench;
using Harness.Engine.Cuda;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Gpu;

/// <summary>
/// The one GPU test suite (issue 20: it had three runners, check-gpu's hand-written JUnit among them): each check of
/// `harness check-gpu` (interop, cuBLAS and invariant GEMM, every NVRTC kernel, batch invariance, the tiny Llama GPU vs CPU,
/// graph decoding) as one test, and every registered model family's scenarios on the GPU. In Harness.sln (built and run,
/// skipping, on a machine without a GPU) and bundled self-contained by ci/gpu-bundle.sh, run by ci/gpu-test.sh with no
/// dotnet installed: `harness-gpu-tests -junit results.xml`. Where no GPU is usable each test is skipped with the reason;
/// with HARNESS_REQUIRE_GPU=1 it fails instead (ci/gpu-test.sh sets it), so a GPU runner cannot pass by skipping.
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
            Assert.Fail($"HARNESS_REQUIRE_GPU=1 but no GPU is usable: {reason}");
        Assert.Skip($"no usable GPU: {reason}");
        return null!;
    }

    [Theory]
    [MemberData(nameof(CheckNames))]
    public void Check(string name)
    {
        var device = RequireGpu();
        Assert.Null(GpuSelfCheck.Checks.Single(c => c.Name == name).Run(device));
    }
}

/// <summary>
/// Every registered model family (<see cref="ModelFamilies"/>) on the GPU: each of its catalog scenarios with the engine on
/// the device (`run --device cuda`) against the recorded reference, as the CPU's offline tier runs it. A family added to the
/// registry is on the GPU here with no edit.
/// </summary>
[Trait("Category", "GPU")]
public sealed class FamilyGpuTests
{
    private static readonly Lazy<ScenarioContext> Recorded = new(() => ScenarioContext.Recorded());

    public static TheoryData<string> Scenarios()
    {
        var data = new TheoryData<string>();
        foreach (var family in ModelFamilies.All)
            foreach (var s in family.Scenarios())
                data.Add(s.Id);
        return data;
    }

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void Scenario_on_the_GPU_against_the_recorded_reference(string id)
    {
        GpuTests.RequireGpu();
        var onGpu = CudaScenarios.OnDevice(ScenarioCatalog.Find(id)!, "cuda");
        Assert.NotNull(onGpu);
        var outcome = ScenarioRunner.Run(onGpu, Recorded.Value);
        Assert.True(outcome.Result.Passed, outcome.Result.Describe());
    }
}

/// <summary>What a machine without a GPU says, and what a device tensor says on one; each skips (with the reason) on the
/// machine where it has nothing to check, never passing vacuously.</summary>
[Trait("Category", "GPU")]
public sealed class GpuUnavailableTests
{
    [Fact]
    public void The_reason_names_what_was_searched()
    {
        var found = CudaDevice.TryGet(out _, out var reason);
        if (found) Assert.Skip("a GPU is usable here: there is no unavailability reason to check");
        Assert.Contains("not found; searched:", reason);
        Assert.Contains("HARNESS_CUDA_LIB_DIR", reason);
    }

    [Fact]
    public void A_device_tensor_refuses_host_reads_with_the_fix()
    {
        var device = GpuTests.RequireGpu();
        var t = Tensor.FromArray(new float[] { 1, 2 }, 2).ToDevice(device);
        var e = Assert.Throws<InvalidOperationException>(() => t.Span<float>());
        Assert.Contains("ToHost()", e.Message);
    }

    /// <summary>Issue 20: Ops.Clamp made a host float32 copy and buffer of a device tensor before taking its CUDA branch (seven
    /// times per Gemma4 audio layer). A device clamp allocates no host storage of the tensor's size.</summary>
    [Fact]
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
