using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// Product for M &lt;= 4 rows that keeps the blocked path's exact order: every C element is one FMA chain
/// c = fma(a_k, b_k, c), k = 0..K-1 ascending from 0, so its bits equal the blocked path's (and a row's bits do not
/// change when it is computed alone). Used in batch-invariant mode, where the faster <see cref="GemmGemv"/> is not
/// allowed, to avoid packing a whole weight for a few rows (decode). Two layouts of B (float32 or bfloat16):
/// <list type="bullet">
/// <item>contiguous along N (ColStride 1): 32 columns at a time for one row, else 8 columns x up to 4 rows;</item>
/// <item>contiguous along K (RowStride 1, B = W^T): 8 x 8 blocks of W transposed in registers so lane j still
/// accumulates column j with k ascending; 8 columns x up to 4 rows (unused row slots repeat the last row: four
/// interleaved chains measured faster than one, and wider column blocks spilled registers).</item>
/// </list>
/// Lanes never mix, so SIMD and scalar code give the same bits. Threads split N.
/// </summary>
internal static unsafe class GemmGemvChain
{
    public const int MaxRows = 4;

    public static bool Applies(in GemmOperand a, in GemmOperand b) =>
        a.Rows is >= 1 and <= MaxRows && a.Cols > 0 && b.Cols > 0 && (b.RowStride == 1 || b.ColStride == 1) && b.DType is DType.Float32 or DType.BFloat16;

    public static void Run(in GemmOperand a, in GemmOperand b, float* c, nint ldc, GemmKernel kernel, int threads)
    {
        int k = a.Cols, n = b.Cols, rows = a.Rows;
        float* x = GemmScratch.Current.Row((nint)rows * k);
        for (int r = 0; r < rows; r++) GemmPacking.WidenRow(a, r, x + (nint)r * k);
        bool simd = kernel != GemmKernel.Scalar && Avx2.IsSupported && Fma.IsSupported;
        int tasks = (long)rows * k * n < GemmBlocking.ParallelThreshold ? 1 : Math.Clamp(n / 64, 1, threads);
        GemmThreadPool.Shared.Run(new Job(x, rows, b, c, ldc, simd, tasks), tasks);
    }

    private sealed class Job(float* x, int rows, GemmOperand b, float* c, nint ldc, bool simd, int tasks) : GemmJob
    {
        public override void Execute(int task)
        {
            int n = b.Cols;
            // Column ranges aligned to 32 so the SIMD blocks stay whole (the bits never depend on the blocking).
            int blocks = (n + 31) / 32;
            int j0 = Math.Min(n, (int)((long)blocks * task / tasks) * 32), j1 = Math.Min(n, (int)((long)blocks * (task + 1) / tasks) * 32);
            bool bf16 = b.DType == DType.BFloat16;
            if (b.ColStride == 1)
            {
                if (bf16) RowMajor<GemmBF16>(x, rows, b, c, ldc, j0, j1, simd); else RowMajor<GemmF32>(x, rows, b, c, ldc, j0, j1, simd);
            }
            else
            {
                if (bf16) ColumnMajor<GemmBF16>(x, rows, b, c, ldc, j0, j1, simd); else ColumnMajor<GemmF32>(x, rows, b, c, ldc, j0, j1, simd);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load8<T>(byte* origin, nint index) where T : struct, IGemmElement =>
        typeof(T) == typeof(GemmF32)
            ? Vector256.Load((float*)origin + index)
            : Vector256.ShiftLeft(Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)origin + index)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowMajor<T>(float* x, int rows, in GemmOperand b, float* c, nint ldc, int j0, int j1, bool simd) where T : struct, IGemmElement
    {
        int k = b.Rows;
        nint rs = b.RowStride;
        byte* origin = b.Origin;
        int j = j0;
        if (simd && rows == 1)
        {
            for (; j + 32 <= j1; j += 32)
            {
                var s0 = Vector256<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
                nint idx = j;
                for (int p = 0; p < k; p++, idx += rs)
                {
                    var xp = Vector256.Create(x[p]);
                    s0 = Fma.MultiplyAdd(xp, Load8<T>(origin, idx), s0);
                    s1 = Fma.MultiplyAdd(xp, Load8<T>(origin, idx + 8), s1);
                    s2 = Fma.MultiplyAdd(xp, Load8<T>(origin, idx + 16), s2);
                    s3 = Fma.MultiplyAdd(xp, Load8<T>(origin, idx + 24), s3);
                }
                s0.Store(c + j); s1.Store(c + j + 8); s2.Store(c + j + 16); s3.Store(c + j + 24);
            }
        }
        if (simd)
        {
            float* x0 = x, x1 = x + Math.Min(1, rows - 1) * k, x2 = x + Math.Min(2, rows - 1) * k, x3 = x + Math.Min(3, rows - 1) * k;
            for (; j + 8 <= j1; j += 8)
            {
                var s0 = Vector256<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
                nint idx = j;
                for (int p = 0; p < k; p++, idx += rs)
                {
                    var v = Load8<T>(origin, idx);
                    s0 = Fma.MultiplyAdd(Vector256.Create(x0[p]), v, s0);
                    s1 = Fma.MultiplyAdd(Vector256.Create(x1[p]), v, s1);
                    s2 = Fma.MultiplyAdd(Vector256.Create(x2[p]), v, s2);
                    s3 = Fma.MultiplyAdd(Vector256.Create(x3[p]), v, s3);
                }
                // Rows past the last one repeat it (same bits); only real rows are stored.
                s0.Store(c + j);
                if (rows > 1) s1.Store(c + ldc + j);
                if (rows > 2) s2.Store(c + 2 * ldc + j);
                if (rows > 3) s3.Store(c + 3 * ldc + j);
            }
        }
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (nint)r * k;
            for (int jj = j; jj < j1; jj++)
            {
                float s = 0;
                nint idx = jj;
                for (int p = 0; p < k; p++, idx += rs) s = MathF.FusedMultiplyAdd(xr[p], T.Load(origin, idx), s);
                c[r * ldc + jj] = s;
            }
        }
    }

    /// <summary>Loads W[j..j+8, p..p+8] (8 columns of B, contiguous along k) and transposes it: r_q = B[p + q, j..j+8].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Load8x8<T>(byte* origin, nint i0, nint cs,
        out Vector256<float> r0, out Vector256<float> r1, out Vector256<float> r2, out Vector256<float> r3,
        out Vector256<float> r4, out Vector256<float> r5, out Vector256<float> r6, out Vector256<float> r7) where T : struct, IGemmElement
    {
        var v0 = Load8<T>(origin, i0); var v1 = Load8<T>(origin, i0 + cs);
        var v2 = Load8<T>(origin, i0 + 2 * cs); var v3 = Load8<T>(origin, i0 + 3 * cs);
        var v4 = Load8<T>(origin, i0 + 4 * cs); var v5 = Load8<T>(origin, i0 + 5 * cs);
        var v6 = Load8<T>(origin, i0 + 6 * cs); var v7 = Load8<T>(origin, i0 + 7 * cs);
        var t0 = Avx.UnpackLow(v0, v1); var t1 = Avx.UnpackHigh(v0, v1);
        var t2 = Avx.UnpackLow(v2, v3); var t3 = Avx.UnpackHigh(v2, v3);
        var t4 = Avx.UnpackLow(v4, v5); var t5 = Avx.UnpackHigh(v4, v5);
        var t6 = Avx.UnpackLow(v6, v7); var t7 = Avx.UnpackHigh(v6, v7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        r0 = Avx.Permute2x128(u0, u4, 0x20); r1 = Avx.Permute2x128(u1, u5, 0x20);
        r2 = Avx.Permute2x128(u2, u6, 0x20); r3 = Avx.Permute2x128(u3, u7, 0x20);
        r4 = Avx.Permute2x128(u0, u4, 0x31); r5 = Avx.Permute2x128(u1, u5, 0x31);
        r6 = Avx.Permute2x128(u2, u6, 0x31); r7 = Avx.Permute2x128(u3, u7, 0x31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Chain8(float* xp, Vector256<float> acc,
        Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7)
    {
        acc = Fma.MultiplyAdd(Vector256.Create(xp[0]), r0, acc);
        acc = Fma.MultiplyAdd(Vector256.Create(xp[1]), r1, acc);
        acc = Fma.MultiplyAdd(Vector256.Create(xp[2]), r2, acc);
        acc = Fma.MultiplyAdd(Vector256.Create(xp[3]), r3, acc);
        acc = Fma.MultiplyAdd(Vector256.Create(xp[4]), r4, acc);
        acc = Fma.MultiplyAdd(Vector256.Create(xp[5]), r5, acc);
        acc = Fma.MultiplyAdd(Vector256.Create(xp[6]), r6, acc);
        return Fma.MultiplyAdd(Vector256.Create(xp[7]), r7, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Gather8<T>(byte* origin, nint i, nint cs) where T : struct, IGemmElement =>
        Vector256.Create(T.Load(origin, i), T.Load(origin, i + cs), T.Load(origin, i + 2 * cs), T.Load(origin, i + 3 * cs),
            T.Load(origin, i + 4 * cs), T.Load(origin, i + 5 * cs), T.Load(origin, i + 6 * cs), T.Load(origin, i + 7 * cs));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ColumnMajor<T>(float* x, int rows, in GemmOperand b, float* c, nint ldc, int j0, int j1, bool simd) where T : struct, IGemmElement
    {
        int k = b.Rows;
        nint cs = b.ColStride;
        byte* origin = b.Origin;
        int j = j0;
        if (simd)
        {
            float* x0 = x, x1 = x + Math.Min(1, rows - 1) * k, x2 = x + Math.Min(2, rows - 1) * k, x3 = x + Math.Min(3, rows - 1) * k;
            for (; j + 8 <= j1; j += 8)
            {
                var s0 = Vector256<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
                nint col = j * cs;
                int p = 0;
                for (; p + 8 <= k; p += 8)
                {
                    Load8x8<T>(origin, col + p, cs, out var r0, out var r1, out var r2, out var r3, out var r4, out var r5, out var r6, out var r7);
                    s0 = Chain8(x0 + p, s0, r0, r1, r2, r3, r4, r5, r6, r7);
                    s1 = Chain8(x1 + p, s1, r0, r1, r2, r3, r4, r5, r6, r7);
                    s2 = Chain8(x2 + p, s2, r0, r1, r2, r3, r4, r5, r6, r7);
                    s3 = Chain8(x3 + p, s3, r0, r1, r2, r3, r4, r5, r6, r7);
                }
                for (; p < k; p++)
                {
                    var v = Gather8<T>(origin, col + p, cs);
                    s0 = Fma.MultiplyAdd(Vector256.Create(x0[p]), v, s0);
                    s1 = Fma.MultiplyAdd(Vector256.Create(x1[p]), v, s1);
                    s2 = Fma.MultiplyAdd(Vector256.Create(x2[p]), v, s2);
                    s3 = Fma.MultiplyAdd(Vector256.Create(x3[p]), v, s3);
                }
                // Rows past the last one repeat it (same bits); only real rows are stored.
                s0.Store(c + j);
                if (rows > 1) s1.Store(c + ldc + j);
                if (rows > 2) s2.Store(c + 2 * ldc + j);
                if (rows > 3) s3.Store(c + 3 * ldc + j);
            }
        }
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (nint)r * k;
            for (int jj = j; jj < j1; jj++)
            {
                float s = 0;
                nint idx = jj * cs;
                for (int p = 0; p < k; p++, idx++) s = MathF.FusedMultiplyAdd(xr[p], T.Load(origin, idx), s);
                c[r * ldc + jj] = s;
            }
        }
    }
}
