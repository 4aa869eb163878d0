namespace Harness.Tests.E2E;

/// <summary>The engine's environment variables are read once at the CLI's boundary: a bad one is one line naming it, exit 2,
/// before any verb runs (it was a TypeInitializationException at the first GEMM, exit 3).</summary>
public sealed class EngineSettingsCliTests
{
    [Theory]
    [InlineData("HARNESS_GEMM_KERNEL", "avx9", "harness: HARNESS_GEMM_KERNEL=avx9 is not a GEMM kernel; known: ")]
    [InlineData("HARNESS_THREADS", "many", "harness: HARNESS_THREADS=many is not a thread count")]
    public void A_bad_engine_variable_is_one_line_and_exit_2(string name, string value, string message)
    {
        var r = CliProcess.Run(["run", "--offline", "matmul/2d-x-5d/fp32"], new Dictionary<string, string?> { [name] = value });
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.StartsWith(message, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }
}
