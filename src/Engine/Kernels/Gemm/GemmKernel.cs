using System.Runtime.Intrinsics.X86;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// The GEMM micro-kernels; <see cref="Auto"/> picks the widest one the CPU supports. HARNESS_GEMM_KERNEL=scalar|avx2|avx512
/// forces one for the whole process (to reproduce a result of another machine, or to test a path).
/// </summary>
public enum GemmKernel
{
    Auto,
    Scalar,
    Avx2,
    Avx512,
}

/// <summary>
/// Run-time kernel choice: the CPU decides (never the shape), unless a test forces one with
/// <see cref="Gemm.ForceKernel"/> for the current async flow.
/// </summary>
internal static class GemmKernelSelector
{
    private static readonly AsyncLocal<GemmKernel?> _forced = new();

    /// <summary>HARNESS_GEMM_KERNEL's value as a kernel (null: unset); read by the host (<see cref="Runtime.EngineSettings"/>).</summary>
    internal static GemmKernel? Parse(string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) return null;
        if (!Enum.TryParse<GemmKernel>(value, ignoreCase: true, out var k))
            throw new ArgumentException($"HARNESS_GEMM_KERNEL={value} is not a GEMM kernel; known: {string.Join(", ", Enum.GetNames<GemmKernel>())}");
        if (!IsSupported(k))
            throw new NotSupportedException($"HARNESS_GEMM_KERNEL={value}: this CPU does not support that kernel");
        return k;
    }

    /// <summary>The best kernel this CPU runs: AVX-512F, else AVX2 with FMA, else scalar.</summary>
    public static GemmKernel Best { get; } =
        Avx512F.IsSupported ? GemmKernel.Avx512 : Avx2.IsSupported && Fma.IsSupported ? GemmKernel.Avx2 : GemmKernel.Scalar;

    public static bool IsSupported(GemmKernel kernel) => kernel switch
    {
        GemmKernel.Auto or GemmKernel.Scalar => true,
        GemmKernel.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        GemmKernel.Avx512 => Avx512F.IsSupported,
        _ => false,
    };

    /// <summary>The kernel the current flow uses (forced or <see cref="Best"/>).</summary>
    public static GemmKernel Current
    {
        get
        {
            var k = _forced.Value ?? Runtime.EngineSettings.Current.GemmKernel ?? GemmKernel.Auto;
            return k == GemmKernel.Auto ? Best : k;
        }
    }

    public static IDisposable Force(GemmKernel kernel)
    {
        if (!IsSupported(kernel))
            throw new NotSupportedException(
                $"GEMM kernel {kernel} is not supported on this CPU (best available: {Best}); " +
                "it needs " + (kernel == GemmKernel.Avx512 ? "AVX-512F" : "AVX2 and FMA"));
        var previous = _forced.Value;
        _forced.Value = kernel;
        return new Restore(previous);
    }

    private sealed class Restore(GemmKernel? previous) : IDisposable
    {
        private bool _done;
        public void Dispose()
        {
            if (_done) return;
            _forced.Value = previous;
            _done = true;
        }
    }
}
