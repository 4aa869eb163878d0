namespace Harness.Tests.E2E;

/// <summary>The engine's and the reference's environment variables are read once at the CLI's boundary: a bad one is one line naming it, exit 2,
/// before any verb runs (it was a TypeInitializationException at the first GEMM, exit 3).</summary>
public sealed class EngineSettingsCliTests
{
    [Theory]
    [InlineData("HARNESS_GEMM_KERNEL", "avx9", "harness: HARNESS_GEMM_KERNEL=avx9 is not a GEMM kernel; known: ")]
    [InlineData("HARNESS_THREADS", "many", "harness: HARNESS_THREADS=many is not a thread count")]
    // the reference's, read at the same boundary (ReferenceSettings): a bad memory cap was taken as "no cap", a bad device
    // reached the worker, which put the model on "gpu" at its first load
    [InlineData("HARNESS_WORKER_MEMORY_MB", "6G", "harness: HARNESS_WORKER_MEMORY_MB=6G is not a size in MB")]
    [InlineData("HARNESS_REFERENCE_DEVICE", "gpu", "harness: HARNESS_REFERENCE_DEVICE=gpu is not a reference device (cpu, cuda, cuda:N or auto)")]
    public void A_bad_engine_variable_is_one_line_and_exit_2(string name, string value, string message)
    {
        var r = CliProcess.Run(["run", "--offline", "matmul/2d-x-5d/fp32"], new Dictionary<string, string?> { [name] = value });
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.StartsWith(message, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    /// <summary>
    /// `compare --device cuda` put its reference on the GPU by SETTING HARNESS_REFERENCE_DEVICE=cuda in its own process, for
    /// the worker to inherit, before it checked anything: every worker the process started afterwards (another command in an
    /// embedding program, a test) ran on the GPU too. The device now goes in the worker's start (ReferenceWorker.Device);
    /// the process environment is the user's, untouched. Run in this process, as `harness` runs it (Cli.Run); the command
    /// stops at its memory check (no worker, no GPU needed), after the point where it set the variable.
    /// </summary>
    [Fact]
    public void Compare_on_cuda_leaves_the_process_environment_as_it_found_it()
    {
        const string variable = "HARNESS_REFERENCE_DEVICE";
        var before = Environment.GetEnvironmentVariable(variable);
        var model = Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", "tiny-llama-fp32");
        int code = Cli.Run(["compare", "--model", model, "--device", "cuda", "--max-memory", "0.000001"]);
        var after = Environment.GetEnvironmentVariable(variable);
        Assert.True(code == 2, $"exit {code}");
        Assert.True(before == after, $"compare --device cuda changed this process's {variable} from {before ?? "(unset)"} to {after ?? "(unset)"}");
    }
}
