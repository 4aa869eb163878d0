using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Harness.Engine.Cuda;
using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Cuda;

/// <summary>
/// The CUDA kernels of Gemma4's MoE graph step (issue 20 item 2) run on the CPU: Emulation/MoeKernels.cpp includes them
/// as the drivers instantiate them (fp32 and bf16) and runs each warp as 32 threads (a barrier for __shfl_xor_sync).
/// expert_gemv must equal a float64 dot product per slot on its 16-byte and scalar paths, with one input row for every
/// slot or one per slot, and equal the decode gemv at M = 1 bit for bit (what makes the graph loop's bits the plain
/// loop's); an out-of-range expert id gives a NaN row; sum_in_id_order must add in ascending (id, slot) with each add
/// rounded. The GPU's own check is check-gpu moe-indexed-experts; this one runs wherever g++ does (skipped, with the
/// reason, where it does not).
/// </summary>
public sealed class KernelEmulationTests
{
    private static string Source => Path.Combine(Path.GetDirectoryName(Fixtures.DefaultDirectory())!, "tests", "Correctness", "Cuda", "Emulation", "MoeKernels.cpp");

    private static string? Gxx()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(dir, "g++"))) return Path.Combine(dir, "g++");
        return null;
    }

    // The kernels for the emulator: per dtype, the prelude once (its PTX asm f16 conversions stubbed: f16 is not
    // emulated) and the templates with the drivers' substitutions; extern "C" dropped so that each dtype has a namespace.
    private static string Kernels(Func<string, string> plant)
    {
        var prelude = Regex.Replace(CudaSource.Prelude, @"^.*asm\(.*$", m =>
            m.Value.Contains("f16_to_f(", StringComparison.Ordinal) ? "__device__ __forceinline__ float f16_to_f(unsigned short h) { return 0.0f; }"
            : "__device__ __forceinline__ unsigned short f_to_f16(float f) { return 0; }", RegexOptions.Multiline);
        var sb = new StringBuilder();
        foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
        {
            string es = dt.Size().ToString(System.Globalization.CultureInfo.InvariantCulture), vec = (16 / dt.Size()).ToString(System.Globalization.CultureInfo.InvariantCulture);
            string Body(string template) => CudaSource.Instantiate(template.Replace("ESZ", es).Replace("VEC", vec), dt)[CudaSource.Prelude.Length..].Replace("extern \"C\" ", "");
            string t = CudaSource.Token(dt);
            sb.Append($"namespace k_{t} {{\n{prelude}{plant(Body(GemvKernel.ExpertSource))}{plant(Body(RowKernels.SumInIdOrder))}}}\n");
            sb.Append($"namespace k_{t}_gemv {{\n{prelude}{Body(GemvKernel.Source)}}}\n");
        }
        return sb.ToString();
    }

    // Builds the emulator over the (planted) kernels and runs it: (exit code, output).
    private static (int Code, string Output) Emulate(string gxx, Func<string, string> plant, bool quick)
    {
        var dir = Directory.CreateTempSubdirectory("harness-kernel-emulation-");
        try
        {
            File.Copy(Source, Path.Combine(dir.FullName, "emu.cpp"));
            File.WriteAllText(Path.Combine(dir.FullName, "kernels.inc"), Kernels(plant));
            var (build, buildOut) = Run(gxx, dir.FullName, "-std=c++20", "-O1", "-pthread", "-w", "emu.cpp", "-o", "emu");
            Assert.True(build == 0, "the emulator did not build:\n" + buildOut);
            return Run(Path.Combine(dir.FullName, "emu"), dir.FullName, quick ? ["quick"] : []);
        }
        finally { dir.Delete(recursive: true); }
    }

    private static (int, string) Run(string exe, string cwd, params string[] args)
    {
        var psi = new ProcessStartInfo(exe, args) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(); return (-1, output + "\n(timed out after 120 s)"); }
        return (p.ExitCode, output + stderr.Result);
    }

    [SkippableFact]
    public void Expert_gemv_and_sum_in_id_order_compute_their_host_contract_on_the_cpu_emulator()
    {
        var gxx = Gxx();
        Skip.If(gxx is null, "no g++ on PATH: the MoE kernels run on the GPU only (check-gpu moe-indexed-experts)");
        var (code, output) = Emulate(gxx!, k => k, quick: false);
        Assert.True(code == 0, output);
        Assert.Contains("all good", output);
    }

    [SkippableFact]
    public void The_emulation_fails_on_an_expert_gemv_that_reads_slot_0s_input_for_every_slot()
    {
        var gxx = Gxx();
        Skip.If(gxx is null, "no g++ on PATH");
        // the planted bug: the per-slot input row ignored (down_proj would multiply every expert by the first slot's h)
        const string rowOfSlot = "const char* a = (const char*)X + (long long)s * ldx * ";
        var (code, output) = Emulate(gxx!, k => k.Contains(rowOfSlot, StringComparison.Ordinal) ? k.Replace(rowOfSlot, "const char* a = (const char*)X + 0LL * ldx * ") : k, quick: true);
        Assert.NotEqual(0, code);
        Assert.Contains("FAILED", output);
        Assert.Contains("rowsX 3 vecok 1: max rel err", output);
    }
}
