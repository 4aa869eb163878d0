using Harness.Scenarios;

namespace Harness.Tests.Correctness.Cuda;

/// <summary>
/// `harness run --device cuda` on every family (runs everywhere: no GPU is needed to map the catalog). The scenarios
/// themselves ran on an H100 against HF on the GPU (ci/gpu-test.sh); here: none of the catalog is skipped any more, each
/// /cuda id keeps its scenario's recording and its fault, and the device part sits before the fault part.
/// </summary>
public sealed class CudaScenarioTests
{
    [Fact]
    public void Every_family_of_the_catalog_has_a_GPU_path()
    {
        var skipped = ScenarioCatalog.All.Where(s => CudaScenarios.OnDevice(s, "cuda") is null).Select(s => s.Id).ToList();
        Assert.Empty(skipped);
        // every registered family is in the catalog (ModelFamilies: a new family needs no edit here)
        foreach (var family in ModelFamilies.All)
            Assert.Contains(ScenarioCatalog.All, family.Owns);
        Assert.Contains(ScenarioCatalog.All, s => s is MatmulScenario);
    }

    [Theory]
    [InlineData("gemma3n/tp2/soft-tokens/fp32/fault=row-parallel-input-is-parallel", "gemma3n/tp2/soft-tokens/fp32/cuda/fault=row-parallel-input-is-parallel")]
    [InlineData("gemma4/moe/tp2/text/bf16/fault=gate-up-swapped", "gemma4/moe/tp2/text/bf16/cuda/fault=gate-up-swapped")]
    [InlineData("gemma4/e2b-like/tp1/audio-tower/bf16/fault=matmul-no-nd-broadcast", "gemma4/e2b-like/tp1/audio-tower/bf16/cuda/fault=matmul-no-nd-broadcast")]
    [InlineData("qwen2-vl/tp4-sp/text/fp32", "qwen2-vl/tp4-sp/text/fp32/cuda")]
    [InlineData("matmul/gemma4-e2b-4dx3d/bf16", "matmul/gemma4-e2b-4dx3d/bf16/cuda")]
    public void A_device_id_keeps_the_scenario_its_recording_and_its_fault(string cpuId, string cudaId)
    {
        var cpu = ScenarioCatalog.All.Single(s => s.Id == cpuId);
        var gpu = CudaScenarios.OnDevice(cpu, "cuda")!;
        Assert.Equal(cudaId, gpu.Id);
        Assert.Equal("cuda", gpu.Device);
        Assert.Equal(cpu.GetType(), gpu.GetType());
        Assert.Equal(cpu.ReferenceKey, gpu.ReferenceKey);
        Assert.Equal(cpu.Fault, gpu.Fault);
        Assert.Equal(cpu.ExpectedFirstBadModule, gpu.ExpectedFirstBadModule);
        Assert.Same(cpu, CudaScenarios.OnDevice(cpu, "cpu"));
        Assert.Equal("cpu", cpu.Device);
    }
}
