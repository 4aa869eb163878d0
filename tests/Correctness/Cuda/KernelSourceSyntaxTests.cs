using System.Diagnostics;
using Harness.Engine.Cuda;
using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Cuda;

/// <summary>
/// The CUDA kernels are compiled by NVRTC at run time, on the GPU machine only: a typo in a new kernel would first show
/// there. Off the GPU, clang's CUDA front end parses a kernel as the driver instantiates it (CudaSource's prelude, the
/// dtype tokens, ESZ/VEC/ELEM substituted), with the CUDA built-ins NVRTC provides declared by a stub (no CUDA headers,
/// as NVRTC compiles them): a syntax or name error fails here. Written for Gemma4's MoE graph step (issue 20 item 2):
/// expert_gemv, the gemv it repeats, sum_in_id_order and index_select (the router's take). Skipped, with the reason,
/// where no clang++ is installed.
/// </summary>
public sealed class KernelSourceSyntaxTests
{
    // What NVRTC declares without headers, for clang's -nocudainc front end (declarations only: -fsyntax-only).
    private const string Stub = """
        #define __global__ __attribute__((global))
        #define __device__ __attribute__((device))
        #define __shared__ __attribute__((shared))
        #define __forceinline__ __attribute__((always_inline)) inline
        #define __launch_bounds__(x) __attribute__((launch_bounds(x)))
        struct uint3_stub { unsigned x, y, z; };
        extern __device__ const uint3_stub threadIdx, blockIdx, blockDim, gridDim;
        struct uint4 { unsigned x, y, z, w; };
        __device__ float __uint_as_float(unsigned);
        __device__ unsigned __float_as_uint(float);
        __device__ float __int_as_float(int);
        __device__ uint4 __ldg(const uint4*);
        __device__ float __shfl_xor_sync(unsigned, float, int);
        __device__ void __syncthreads();
        __device__ float fmaf(float, float, float);
        __device__ float sqrtf(float);
        __device__ float fmaxf(float, float);
        __device__ int atomicCAS(int*, int, int);

        """;

    private static string? Clang()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(dir, "clang++"))) return Path.Combine(dir, "clang++");
        return Directory.Exists("/usr/lib") ? Directory.GetDirectories("/usr/lib", "llvm-*").Select(d => Path.Combine(d, "bin", "clang++"))
            .Where(File.Exists).OrderDescending().FirstOrDefault() : null;
    }

    // clang's diagnostics for one instantiated kernel source, or null when it parses.
    private static string? Parse(string clang, string name, string source)
    {
        var file = Path.Combine(Path.GetTempPath(), $"harness-kernel-{Environment.ProcessId}-{name.Replace('/', '-')}.cu");
        File.WriteAllText(file, Stub + source);
        try
        {
            var psi = new ProcessStartInfo(clang, ["-x", "cuda", "-fsyntax-only", "--cuda-device-only", "-nocudainc", "-nocudalib",
                "--cuda-gpu-arch=sm_80", "-Wno-unknown-cuda-version", "-Werror", file]) { RedirectStandardError = true, RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd() + p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(60_000)) { p.Kill(); return $"{name}: clang did not finish in 60 s"; }
            return p.ExitCode == 0 ? null : $"{name}: {err}";
        }
        finally { File.Delete(file); }
    }

    // Each kernel as its driver instantiates it, per dtype.
    private static IEnumerable<(string Name, string Source)> Kernels()
    {
        foreach (var dt in new[] { DType.Float32, DType.BFloat16, DType.Float16 })
        {
            string es = dt.Size().ToString(System.Globalization.CultureInfo.InvariantCulture), vec = (16 / dt.Size()).ToString(System.Globalization.CultureInfo.InvariantCulture);
            yield return ($"gemv/{CudaSource.Token(dt)}", CudaSource.Instantiate(GemvKernel.Source.Replace("ESZ", es).Replace("VEC", vec), dt));
            yield return ($"expert_gemv/{CudaSource.Token(dt)}", CudaSource.Instantiate(GemvKernel.ExpertSource.Replace("ESZ", es).Replace("VEC", vec), dt));
            yield return ($"sum_in_id_order/{CudaSource.Token(dt)}", CudaSource.Instantiate(RowKernels.SumInIdOrder, dt));
        }
        yield return ("index_select/unsigned short", CudaSource.Prelude + IndexKernels.IndexSelect.Replace("ELEM", "unsigned short"));
    }

    [SkippableFact]
    public void The_moe_graph_steps_kernels_parse_as_nvrtc_gets_them()
    {
        var clang = Clang();
        Skip.If(clang is null, "no clang++ on PATH or in /usr/lib/llvm-*/bin: the kernels' syntax is checked by NVRTC on the GPU only");
        var errors = Kernels().Select(k => Parse(clang!, k.Name, k.Source)).OfType<string>().ToList();
        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    [SkippableFact]
    public void The_syntax_check_fails_on_a_kernel_with_a_misspelt_name()
    {
        var clang = Clang();
        Skip.If(clang is null, "no clang++ on PATH or in /usr/lib/llvm-*/bin");
        // the planted bug: expert_gemv's accumulator misspelt in one fmaf
        var bad = CudaSource.Instantiate(GemvKernel.ExpertSource.Replace("ESZ", "2").Replace("VEC", "8"), DType.BFloat16)
            .Replace("acc = fmaf(xv[e], wv[e], acc);", "acc = fmaf(xv[e], wv[e], accc);");
        var error = Parse(clang!, "expert_gemv-planted", bad);
        Assert.NotNull(error);
        Assert.Contains("accc", error);
    }
}
