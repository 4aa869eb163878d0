using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Harness.Bench;
using Harness.Engine.Tensors;

namespace Harness.Commands;

/// <summary>
/// `harness bench`, `harness check-kernels` and `harness check-gpu`, parsed by System.CommandLine as every verb is (they
/// parsed their arguments by hand: an unknown option or a bad number was ignored, or an exception). A bad value is one
/// line naming the option, exit 2; an option of the other bench (a GEMM option with --model, a model option without it)
/// is refused, not ignored.
/// </summary>
internal static class BenchCommands
{
    public static Command Bench()
    {
        var threads = Positive("--threads", "Kernel threads (default: HARNESS_THREADS or the processor count).", "N");
        var sizes = IntList("--sizes", "GEMM bench: square sizes (default 256,512,1024,2048).", "N,N,...");
        var noDecode = new Option<bool>("--no-decode") { Description = "GEMM bench: skip the 1x4096 by 4096x4096 decode-shaped product." };
        var noReference = new Option<bool>("--no-reference") { Description = "GEMM bench: no torch.matmul beside ours." };
        var linear = new Option<bool>("--linear") { Description = "GEMM bench: nn.Linear on model shapes (fp32, bf16) beside the square rate, copy bandwidth and torch." };
        var m = IntList("--m", "GEMM bench with --linear: the row counts (default 1,8,64,512,2048).", "M,M,...");
        var model = new Option<string?>("--model") { Description = "Model bench: an HF Llama checkpoint folder (config.json + safetensors).", HelpName = "DIR" };
        var random = new Option<string?>("--random-llama") { Description = "Model bench on the CPU: a random Llama written once by the reference worker (155m).", HelpName = "SIZE" };
        var device = new Option<string>("--device") { Description = "Model bench: cpu (default) or cuda.", DefaultValueFactory = _ => "cpu", HelpName = "cpu|cuda" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var dtype = new Option<string?>("--dtype")
        {
            Description = "Model bench: the dtype(s): on the CPU fp32,bf16 (default both), on the GPU one of bf16 (default), fp16, fp32.",
            HelpName = "DTYPE[,DTYPE]",
        };
        dtype.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string?>() is { } text && DTypes(text) is null)
                r.AddError($"--dtype expects fp32, bf16 or fp16 (comma-separated on the CPU), got '{text}'");
        });
        var prompts = IntList("--prompts", "Model bench: prompt lengths (CPU default 64,512,2048; GPU: one, default 128).", "N,N,...");
        prompts.Aliases.Add("--prompt");
        var newTokens = Positive("--new", "Model bench: tokens to decode (CPU default 32, at least 3; GPU default 128).", "N");
        var runs = Positive("--runs", "Model bench: timed runs (CPU default 3, GPU 5).", "N");
        var noHf = new Option<bool>("--no-hf") { Description = "Model bench: no HF eager beside the engine." };
        var profile = new Option<bool>("--profile") { Description = "Model bench on the CPU: per-module times." };

        var command = new Command("bench",
            "fp32 GEMM GFLOP/s, normal and batch-invariant, beside torch.matmul measured in the same run (--linear: nn.Linear on model shapes). " +
            "With --model DIR (or --random-llama 155m): the engine's Llama beside HF eager with the same thread count; on the CPU (default) " +
            "prefill tokens/s per prompt length and greedy decode tokens/s for fp32 and bf16 beside the square-GEMM rate and copy bandwidth " +
            "measured in the same run; --device cuda: the text decoder of any family (llama, gemma3n, gemma4, qwen2_vl by config.json's model_type), prefill ms, decode tokens/s (plain and CUDA-graph loops), peak memory, weight-read floor.")
        {
            threads, sizes, noDecode, noReference, linear, m, model, random, device, dtype, prompts, newTokens, runs, noHf, profile,
        };
        Option[] gemmOnly = [sizes, noDecode, noReference, linear, m];
        Option[] modelOnly = [device, dtype, prompts, newTokens, runs, noHf, profile];
        command.Validators.Add(r =>
        {
            bool Given(Option o) => r.GetResult(o) is { Implicit: false };
            bool isModel = Given(model) || Given(random);
            if (isModel && gemmOnly.FirstOrDefault(Given) is { } g) r.AddError($"{g.Name} is a GEMM bench option; it does not go with --model/--random-llama");
            if (!isModel && modelOnly.FirstOrDefault(Given) is { } o) r.AddError($"{o.Name} is a model bench option: it needs --model DIR (or --random-llama)");
            if (Given(m) && !Given(linear)) r.AddError("--m needs --linear");
            bool cuda = r.GetValue(device) == "cuda";
            if (cuda && Given(random)) r.AddError("--random-llama is the CPU bench's (--device cpu)");
            if (cuda && Given(profile)) r.AddError("--profile is the CPU bench's (--device cpu)");
            if (cuda && Given(threads)) r.AddError("--threads is the CPU bench's");
            if (cuda && r.GetValue(dtype) is { } d && d.Contains(',')) r.AddError("--device cuda takes one --dtype");
            if (cuda && r.GetValue(prompts) is { } p && p.Contains(',')) r.AddError("--device cuda takes one --prompt length");
            if (cuda && !Given(model)) r.AddError("--device cuda needs --model DIR");
            if (!cuda && isModel && r.GetValue(newTokens) is < 3) r.AddError("--new must be at least 3 on the CPU");
        });
        command.SetAction(r =>
        {
            var o = new BenchOptions
            {
                Threads = r.GetValue(threads), Sizes = Ints(r.GetValue(sizes)), NoDecode = r.GetValue(noDecode), NoReference = r.GetValue(noReference),
                Linear = r.GetValue(linear), M = Ints(r.GetValue(m)), Model = r.GetValue(model), RandomLlama = r.GetValue(random),
                Device = r.GetValue(device) ?? "cpu", DTypes = r.GetValue(dtype) is { } d ? DTypes(d) : null, Prompts = Ints(r.GetValue(prompts)),
                NewTokens = r.GetValue(newTokens), Runs = r.GetValue(runs), NoHf = r.GetValue(noHf), Profile = r.GetValue(profile),
            };
            return o.Model is not null || o.RandomLlama is not null ? ModelBench.Run(o) : GemmBenchmark.Run(o);
        });
        return command;
    }

    public static Command CheckKernels()
    {
        var command = new Command("check-kernels", "Every GEMM micro-kernel this CPU runs vs a float64 reference, plus batch invariance. Exit 1 on any failure.");
        command.SetAction(_ => KernelSelfCheck.Run());
        return command;
    }

    public static Command CheckGpu()
    {
        var name = new Argument<string?>("NAME") { Description = "Run only the checks whose name contains this.", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("check-gpu",
            "Every CUDA piece of the engine (interop, cuBLAS and invariant GEMM, NVRTC kernels, the tiny Llama) vs the CPU engine, printed " +
            "(the same checks are the GPU test suite, tests/Gpu). Exit 1 on any failure, 3 when no GPU is usable.") { name };
        command.SetAction(r => GpuSelfCheck.Run(r.GetValue(name)));
        return command;
    }

    private static Option<int?> Positive(string option, string description, string helpName)
    {
        var o = new Option<int?>(option) { Description = description, HelpName = helpName };
        o.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is < 1) r.AddError($"{option} must be at least 1");
        });
        return o;
    }

    private static Option<string?> IntList(string option, string description, string helpName)
    {
        var o = new Option<string?>(option) { Description = description, HelpName = helpName };
        o.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string?>() is { } text && Ints(text) is null)
                r.AddError($"{option} expects a comma-separated list of positive integers, got '{text}'");
        });
        return o;
    }

    /// <summary>"1,8,64" as positive integers; null when any is not one (or the list is empty).</summary>
    internal static int[]? Ints(string? text)
    {
        if (text is null) return null;
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var values = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out values[i]) || values[i] < 1) return null;
        return values.Length == 0 ? null : values;
    }

    private static DType[]? DTypes(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var dtypes = new List<DType>();
        foreach (var p in parts)
        {
            if (p is not ("fp32" or "bf16" or "fp16" or "float32" or "bfloat16" or "float16")) return null;
            dtypes.Add(DTypeInfo.Parse(p));
        }
        return dtypes.Count == 0 ? null : dtypes.ToArray();
    }
}
