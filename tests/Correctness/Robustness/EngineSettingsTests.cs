using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 20 item 5: the engine read environment variables itself (HARNESS_PYTHON in CudaLibraries, HARNESS_THREADS and
/// HARNESS_BATCH_INVARIANT in ComputeSettings, the kernel choices in static initializers) and CudaDevice.SyncEachLaunch was
/// a settable static a check changed. Now the host reads them once (Cli.ConfigureSettings) into EngineSettings.
/// </summary>
public sealed class EngineSettingsTests
{
    [Fact]
    public void No_engine_file_reads_an_environment_variable()
    {
        var root = Directory.GetParent(Fixtures.DefaultDirectory())!.FullName;
        var engine = Path.Combine(root, "src", "Engine");
        var hits = Directory.EnumerateFiles(engine, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (File: Path.GetRelativePath(root, f), Line: i + 1, Text: line)))
            .Where(l => l.Text.Contains("GetEnvironmentVariable", StringComparison.Ordinal))
            .Select(l => $"{l.File}:{l.Line}: {l.Text.Trim()}")
            .ToList();
        Assert.True(hits.Count == 0, "engine code reading the environment:\n" + string.Join("\n", hits));
    }

    [Fact]
    public void The_settings_come_from_the_variables_the_host_hands_over()
    {
        var vars = new Dictionary<string, string>
        {
            ["HARNESS_THREADS"] = "3", ["HARNESS_BATCH_INVARIANT"] = "1", ["HARNESS_GEMM_KERNEL"] = "scalar", ["HARNESS_BF16_KERNEL"] = "widen",
            ["HARNESS_CUDA_SYNC"] = "1", ["HARNESS_CACHE"] = "/c", ["HARNESS_CUDA_LIB_DIR"] = "/a:/b", ["HARNESS_PYTHON"] = "/venv/bin/python3",
            ["CUDA_HOME"] = "/cuda",
        };
        var s = EngineSettings.From(n => vars.GetValueOrDefault(n));
        Assert.Equal(3, s.Threads);
        Assert.True(s.BatchInvariant);
        Assert.Equal(GemmKernel.Scalar, s.GemmKernel);
        Assert.False(s.Bf16Native);
        Assert.True(s.CudaSyncEachLaunch);
        Assert.Equal("/c", s.CacheDirectory);
        Assert.Equal(["/a", "/b"], s.CudaLibraryDirectories);
        Assert.Equal("/venv/bin/python3", s.ReferencePython);
        Assert.Equal(["/cuda"], s.CudaRoots);
        var none = EngineSettings.From(_ => null);
        Assert.Equal(Environment.ProcessorCount, none.Threads);
        Assert.False(none.CudaSyncEachLaunch);
        Assert.Null(none.GemmKernel);
    }

    [Theory]
    [InlineData("HARNESS_THREADS", "zero", "HARNESS_THREADS=zero is not a thread count")]
    [InlineData("HARNESS_THREADS", "0", "HARNESS_THREADS=0 is not a thread count")]
    [InlineData("HARNESS_GEMM_KERNEL", "avx9", "HARNESS_GEMM_KERNEL=avx9 is not a GEMM kernel")]
    [InlineData("HARNESS_BF16_KERNEL", "fast", "HARNESS_BF16_KERNEL=fast is not a bf16 kernel")]
    public void A_bad_value_names_its_variable(string name, string value, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => EngineSettings.From(n => n == name ? value : null));
        Assert.StartsWith(message, e.Message);
    }

    [Fact]
    public void Sync_each_launch_is_the_configured_setting_not_a_switch()
    {
        Assert.Null(typeof(Harness.Engine.Cuda.CudaDevice).GetProperty(nameof(Harness.Engine.Cuda.CudaDevice.SyncEachLaunch))!.SetMethod);
        Assert.Equal(EngineSettings.Current.CudaSyncEachLaunch, Harness.Engine.Cuda.CudaDevice.SyncEachLaunch);
    }
}
