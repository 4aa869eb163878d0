using System.Buffers;
using Harness.Engine.Runtime;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>The execution path a GEMM call takes (<see cref="Gemm.PathFor"/>: a function of the operands and the mode).</summary>
internal enum GemmPath
{
    None,
    /// <summary>Packed, blocked GotoBLAS nest (<see cref="GemmDriver"/>), threads split M/N. Both modes.</summary>
    Blocked,
    /// <summary>M == 1 dot-product GEMV with partial sums along K (<see cref="GemmGemv"/>). Normal mode only.</summary>
    GemvDot,
    /// <summary>M &lt;= 4 without packing, same FMA chain as the blocked path (<see cref="GemmGemvChain"/>). Both modes.</summary>
    GemvChain,
    /// <summary>MultiplyBatched with whole small products spread over threads, each product on one thread.</summary>
    BatchedAcrossEntries,
}

/// <summary>
/// C = A x B with float32 accumulation. A is [M, K], B is [K, N], C is float32 row-major with leading dimension ldc.
/// In batch-invariant mode (<see cref="ComputeSettings.BatchInvariant"/>) each C element is reduced over K in one fixed
/// order that depends on K alone, never on M, N, the row's position or the thread count.
/// <para>Paths (see <see cref="GemmPath"/>):</para>
/// <list type="bullet">
/// <item>Blocked (both modes, every shape not taken below): operands are packed (any strides, bf16/fp16 widened) and
/// run through an MR x NR micro-kernel chosen from the CPU (AVX-512 14x32, AVX2+FMA 6x16, scalar 4x8). Every element is
/// one FMA chain over k = 0..K-1 ascending, continued across KC blocks through C, so the bits depend on K alone
/// (and are the same for all three kernels). Threads split C over M/N tiles, never K.</item>
/// <item>GEMV (normal mode only): M == 1, K &gt;= 32 and B contiguous along K (fp32/bf16): dot products with several
/// vector partial sums along K, reduced pairwise, no packing, threads split N (see <see cref="GemmGemv"/>). Faster for
/// decode, but a different order than the blocked path.</item>
/// <item>GEMV chain (both modes; M == 1 in invariant mode, M = 2..4 in both, and M == 1 in normal mode when the dot
/// path does not apply): M &lt;= 4, B contiguous along N or K (fp32/bf16): no packing (decode reads the weight once),
/// but the same single FMA chain per element as the blocked path, hence the same bits; the choice depends on M but the
/// arithmetic does not, so batch invariance holds (tested bit for bit against the blocked path).</item>
/// <item>MultiplyBatched: products smaller than 256^3 run one per thread (entries spread over threads); larger ones run
/// one after another, each multithreaded. Each product's bits are the same either way.</item>
/// </list>
/// Both modes are deterministic for a fixed shape: no path depends on timing or on which thread runs which task.
/// Normal mode does not split K and does not pick KC from the shape (not needed to reach the target here).
/// </summary>
public static class Gemm
{
    /// <summary>Forces a micro-kernel for the current async flow until disposed; throws NotSupportedException if the CPU lacks it.</summary>
    /// <summary>Forces a micro-kernel for the current flow until disposed; throws NotSupportedException when the CPU lacks it.</summary>
    public static IDisposable ForceKernel(GemmKernel kernel) => GemmKernelSelector.Force(kernel);

    /// <summary>The micro-kernels this CPU runs, narrowest first.</summary>
    public static IReadOnlyList<GemmKernel> SupportedKernels { get; } =
        new[] { GemmKernel.Scalar, GemmKernel.Avx2, GemmKernel.Avx512 }.Where(GemmKernelSelector.IsSupported).ToArray();

    /// <summary>The micro-kernel the current flow uses, e.g. "avx2-fma 6x16".</summary>
    public static string KernelName => GemmKernelSelector.Current switch
    {
        GemmKernel.Avx512 => "avx512f 14x32",
        GemmKernel.Avx2 => "avx2-fma 6x16",
        _ => "scalar 4x8",
    };

    /// <summary>Null when the native vdpbf16ps kernel can run on this CPU, else the reason (the bf16 panels are then widened in registers).</summary>
    public static string? NativeBf16UnsupportedReason => Bf16DotKernel.UnsupportedReason;

    /// <summary>How normal-mode bf16 Linear layers pick their kernel now (native vdpbf16ps or bf16 panels widened in registers), in words.</summary>
    public static string Bf16KernelName => Bf16DotKernel.Describe();

    /// <summary>Forces the native bf16 kernel on or off for the current flow until disposed (bench, tests).</summary>
    public static IDisposable ForceNativeBf16(bool native) => Bf16DotKernel.Force(native);

    public static void Multiply(in MatrixView a, in MatrixView b, Span<float> c, int ldc)
    {
        CheckShapes(a, b, c, ldc, 0);
        var kernel = GemmKernelSelector.Current;
        bool invariant = ComputeSettings.BatchInvariant;
        int threads = ComputeSettings.Threads;
        if (a.Rows == 0 || b.Cols == 0) return;
        var pa = GemmOperand.Pin(a, out var ha);
        using (ha)
        {
            var pb = GemmOperand.Pin(b, out var hb);
            using (hb)
            {
                unsafe
                {
                    fixed (float* pc = c) RunProduct(pa, pb, pc, ldc, kernel, invariant, threads);
                }
            }
        }
    }

    /// <summary>
    /// C = A x W^T with W packed once (<see cref="PackedWeight"/>, W [N, K]): A is [M, K] (any strides), C float32 [M, N]
    /// with leading dimension ldc. Batch-invariant mode as <see cref="Multiply"/> (see <see cref="PackedGemm"/>).
    /// </summary>
    internal static void MultiplyPacked(in MatrixView a, PackedWeight w, Span<float> c, int ldc)
    {
        if (a.Cols != w.K)
            throw new ArgumentException($"mat1 and mat2 shapes cannot be multiplied ({a.Rows}x{a.Cols} and {w.K}x{w.N})");
        if (a.Rows > 0 && w.N > 0 && (long)(a.Rows - 1) * ldc + w.N > c.Length)
            throw new ArgumentException($"output of {c.Length} floats cannot hold a {a.Rows}x{w.N} result with ldc {ldc}");
        var pa = GemmOperand.Pin(a, out var ha);
        using (ha)
        {
            unsafe
            {
                fixed (float* pc = c) PackedGemm.Multiply(pa, w, pc, ldc, ComputeSettings.BatchInvariant, ComputeSettings.Threads);
            }
        }
    }

    /// <summary>Independent products of equal shapes: C_i starts at c[i * cBatchStride].</summary>
    public static void MultiplyBatched(ReadOnlySpan<MatrixView> a, ReadOnlySpan<MatrixView> b, Span<float> c, int ldc, int cBatchStride)
    {
        if (a.Length != b.Length) throw new ArgumentException($"batched GEMM got {a.Length} A operands and {b.Length} B operands");
        for (int i = 0; i < a.Length; i++) CheckShapes(a[i], b[i], c, ldc, i * cBatchStride);
        if (a.Length == 0) return;
        var kernel = GemmKernelSelector.Current;
        bool invariant = ComputeSettings.BatchInvariant;
        int threads = ComputeSettings.Threads;
        int count = a.Length;
        var handles = new MemoryHandle[2 * count];
        var ops = new GemmOperand[2 * count];
        try
        {
            for (int i = 0; i < count; i++)
            {
                ops[2 * i] = GemmOperand.Pin(a[i], out handles[2 * i]);
                ops[2 * i + 1] = GemmOperand.Pin(b[i], out handles[2 * i + 1]);
            }
            unsafe
            {
                fixed (float* pc = c)
                {
                    if (AcrossEntries(a, b, threads))
                    {
                        var job = new BatchedJob(ops, pc, ldc, cBatchStride, kernel, invariant, Math.Min(threads, count));
                        GemmThreadPool.Shared.Run(job, job.Tasks);
                    }
                    else
                    {
                        for (int i = 0; i < count; i++)
                            if (ops[2 * i].Rows > 0 && ops[2 * i + 1].Cols > 0)
                                RunProduct(ops[2 * i], ops[2 * i + 1], pc + (long)i * cBatchStride, ldc, kernel, invariant, threads);
                    }
                }
            }
        }
        finally
        {
            foreach (var h in handles) h.Dispose();
        }
    }

    /// <summary>
    /// The path <see cref="Multiply"/> takes for a [M, K] x b [K, N] in the current mode (batch-invariant or not): a function
    /// of shapes, strides and dtypes alone, the one the product dispatches on (tests and the bench ask it; no call
    /// records which path it took).
    /// </summary>
    internal static GemmPath PathFor(in MatrixView a, in MatrixView b)
    {
        if (a.Rows == 0 || b.Cols == 0) return GemmPath.None;
        var pa = GemmOperand.Pin(a, out var ha);
        using (ha)
        {
            var pb = GemmOperand.Pin(b, out var hb);
            using (hb) return PathOf(pa, pb, ComputeSettings.BatchInvariant);
        }
    }

    /// <summary>The path <see cref="MultiplyBatched"/> takes in the current mode and thread count: whole products spread
    /// over threads, or each product's own <see cref="PathFor"/> (the last non-empty one's).</summary>
    internal static GemmPath BatchedPathFor(ReadOnlySpan<MatrixView> a, ReadOnlySpan<MatrixView> b)
    {
        if (AcrossEntries(a, b, ComputeSettings.Threads)) return GemmPath.BatchedAcrossEntries;
        var path = GemmPath.None;
        for (int i = 0; i < a.Length; i++)
            if (a[i].Rows > 0 && b[i].Cols > 0) path = PathFor(a[i], b[i]);
        return path;
    }

    // Products smaller than the threshold run one per thread when there are several and threads to spread them over.
    private static bool AcrossEntries(ReadOnlySpan<MatrixView> a, ReadOnlySpan<MatrixView> b, int threads)
    {
        long size = 0;
        for (int i = 0; i < a.Length; i++) size = Math.Max(size, (long)a[i].Rows * a[i].Cols * b[i].Cols);
        return a.Length > 1 && threads > 1 && size < GemmBlocking.BatchedPerProductThreshold;
    }

    private static GemmPath PathOf(in GemmOperand a, in GemmOperand b, bool invariant) =>
        !invariant && GemmGemv.Applies(a, b) ? GemmPath.GemvDot
        : GemmGemvChain.Applies(a, b) ? GemmPath.GemvChain
        : GemmPath.Blocked;

    private static unsafe void RunProduct(in GemmOperand a, in GemmOperand b, float* c, nint ldc, GemmKernel kernel, bool invariant, int threads)
    {
        switch (PathOf(a, b, invariant))
        {
            case GemmPath.GemvDot:
                GemmGemv.Run(a, b, c, kernel, threads);
                break;
            case GemmPath.GemvChain:
                GemmGemvChain.Run(a, b, c, ldc, kernel, threads);
                break;
            default:
                var job = new GemmBlockedJob(a, b, c, ldc, kernel, threads);
                GemmThreadPool.Shared.Run(job, job.Tasks);
                break;
        }
    }

    private sealed unsafe class BatchedJob(GemmOperand[] ops, float* c, nint ldc, long cBatchStride, GemmKernel kernel, bool invariant, int tasks) : GemmJob
    {
        public int Tasks => tasks;

        public override void Execute(int task)
        {
            int count = ops.Length / 2;
            for (int i = task; i < count; i += tasks)
                if (ops[2 * i].Rows > 0 && ops[2 * i + 1].Cols > 0)
                    RunProduct(ops[2 * i], ops[2 * i + 1], c + i * cBatchStride, ldc, kernel, invariant, threads: 1);
        }
    }

    internal static void CheckShapes(in MatrixView a, in MatrixView b, Span<float> c, int ldc, int cOffset)
    {
        if (a.Cols != b.Rows)
            throw new ArgumentException($"mat1 and mat2 shapes cannot be multiplied ({a.Rows}x{a.Cols} and {b.Rows}x{b.Cols})");
        if (ldc < b.Cols) throw new ArgumentException($"ldc {ldc} is smaller than N {b.Cols}");
        if (a.Rows > 0 && b.Cols > 0 && (long)cOffset + (long)(a.Rows - 1) * ldc + b.Cols > c.Length)
            throw new ArgumentException($"output of {c.Length} floats cannot hold a {a.Rows}x{b.Cols} result at offset {cOffset} with ldc {ldc}");
    }
}
