using Harness.Engine.Runtime;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// Cache blocking for one micro-kernel (GotoBLAS loop nest NC / KC / MC around the MR x NR register tile).
/// Tuned for Zen3 (32 KiB L1d, 512 KiB L2 per core, 32 MiB shared L3):
/// KC x NR packed B micro-panel plus MR x KC A micro-panel stay in L1, the MC x KC packed A block stays in L2,
/// the KC x NC packed B block lives in L3. KC does not change any result bit: the micro-kernel continues the
/// same FMA chain across KC blocks (see <see cref="IGemmMicroKernel"/>), so the reduction order depends on K alone.
/// </summary>
internal readonly record struct GemmBlocking(int KC, int MC, int NC)
{
    /// <summary>Below this many multiply-adds (M*N*K) a product runs on one thread: dispatch would cost more than it saves.</summary>
    public const long DefaultParallelThreshold = 96L * 96 * 96;

    /// <summary>The current flow's threshold: <see cref="ComputeSettings.ParallelThreshold"/> (check-kernels and the kernel tests
    /// lower it for a scope to run the thread partition on small shapes).</summary>
    public static long ParallelThreshold => ComputeSettings.ParallelThreshold ?? DefaultParallelThreshold;

    /// <summary>MultiplyBatched runs whole products per thread (instead of splitting each one) below this size.</summary>
    public const long BatchedPerProductThreshold = 256L * 256 * 256;
}
