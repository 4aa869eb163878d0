using System.CommandLine;

namespace Harness.Commands;

/// <summary>`harness bench [options]` and `harness check-kernels`: the existing tools, their arguments passed through.</summary>
internal static class BenchCommands
{
    public static Command Bench() => PassThrough("bench",
        "fp32 GEMM GFLOP/s, normal and batch-invariant, beside torch.matmul measured in the same run. " +
        "Options (passed through): --threads N, --sizes 256,512,..., --no-decode, --no-reference; --linear [--m 1,8,64,512,2048]: " +
        "nn.Linear on model shapes (fp32, bf16) beside the square rate, copy bandwidth and torch. " +
        "With --model DIR (or --random-llama 155m, written once by the reference worker): the engine's Llama beside HF eager with the same " +
        "thread count. On the CPU (default): fp32 and bf16, prefill tokens/s for --prompts 64,512,2048 and greedy decode tokens/s, " +
        "GFLOP/s and GB/s beside the square-GEMM rate and copy bandwidth measured in the same run, issue 15's ratios; " +
        "--threads N, --dtype fp32,bf16, --new 32, --runs 3, --no-hf, --profile (per-module times). " +
        "--device cuda: the text decoder of any family (llama, gemma3n, gemma4, qwen2_vl by config.json's model_type), the plain decode loop and " +
        "the CUDA graph loop (tokens compared) beside HF eager: prefill ms, decode tokens/s, peak memory, weight-read floor; " +
        "--dtype bf16|fp16|fp32, --prompt 128, --new 128, --runs 5, --no-hf.",
        args => args.Contains("--model") || args.Contains("--random-llama") ? Harness.Bench.ModelBench.Run(args) : Harness.Bench.GemmBenchmark.Run(args));

    public static Command CheckKernels() => PassThrough("check-kernels",
        "Every GEMM micro-kernel this CPU runs vs a float64 reference, plus batch invariance. Exit 1 on any failure.",
        Harness.Bench.KernelSelfCheck.Run);

    public static Command CheckGpu() => PassThrough("check-gpu",
        "Every CUDA piece of the engine (interop, cuBLAS and invariant GEMM, NVRTC kernels, the tiny Llama) vs the CPU engine. " +
        "Optional argument: a substring of the check names. Exit 1 on any failure, 3 when no GPU is usable.",
        Harness.Bench.GpuSelfCheck.Run);

    private static Command PassThrough(string name, string description, Func<string[], int> run)
    {
        var command = new Command(name, description) { TreatUnmatchedTokensAsErrors = false };
        command.SetAction(r => run(r.UnmatchedTokens.ToArray()));
        return command;
    }
}
