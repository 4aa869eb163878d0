namespace Harness.Tests.E2E;

/// <summary>
/// Issue 20 item 5: `bench` and `check-*` parsed their arguments by hand (an unknown option after --model was ignored, `--prompt
/// abc` on the GPU path was an unhandled FormatException, `check-kernels --x` ran anyway). Now System.CommandLine parses them as
/// every verb: a bad value or an option of the other bench is one line naming it, exit 2, before anything is measured.
/// </summary>
public sealed class BenchArgumentTests
{
    [Theory]
    [InlineData(new[] { "bench", "--threads", "0" }, "--threads must be at least 1")]
    [InlineData(new[] { "bench", "--sizes", "256,x" }, "--sizes expects a comma-separated list of positive integers, got '256,x'")]
    [InlineData(new[] { "bench", "--new", "8" }, "--new is a model bench option: it needs --model DIR (or --random-llama)")]
    [InlineData(new[] { "bench", "--model", "fixtures/models/tiny-llama-fp32", "--sizes", "64" }, "--sizes is a GEMM bench option; it does not go with --model/--random-llama")]
    [InlineData(new[] { "bench", "--model", "fixtures/models/tiny-llama-fp32", "--device", "cuda", "--prompt", "abc" }, "--prompts expects a comma-separated list of positive integers, got 'abc'")]
    [InlineData(new[] { "bench", "--model", "fixtures/models/tiny-llama-fp32", "--dtype", "int8" }, "--dtype expects fp32, bf16 or fp16")]
    [InlineData(new[] { "bench", "--m", "1,8" }, "--m needs --linear")]
    [InlineData(new[] { "bench", "--bogus" }, "Unrecognized command or argument '--bogus'")]
    [InlineData(new[] { "check-kernels", "--bogus" }, "Unrecognized command or argument '--bogus'")]
    [InlineData(new[] { "check-gpu", "a", "b" }, "Unrecognized command or argument 'b'")]
    public void A_bad_bench_argument_is_one_line_and_exit_2(string[] args, string message)
    {
        var r = CliProcess.Run(args);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains(message, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Equal("", r.Stdout);                                              // nothing measured
    }
}
