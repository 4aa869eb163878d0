using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// M == 1 product that keeps the blocked path's exact order: every C element is one FMA chain
/// c = fma(a_k, b_k, c), k = 0..K-1 ascending from 0, so its bits equal the blocked path's (and a row's bits do not
/// change when it is computed alone). Used in batch-invariant mode, where the faster <see cref="GemmGemv"/> is not
/// allowed, to avoid packing a whole weight for one row. Two layouts of B (float32 or bfloat16):
/// <list type="bullet">
/// <item>contiguous along N (ColStride 1): 32 columns at a time, 4 vector accumulators, one broadcast a_k per row of B;</item>
/// <item>contiguous along K (RowStride 1, B = W^T): 8 columns at a time, 8 x 8 blocks of W transposed in registers
/// so lane j still accumulates column j with k ascending.</item>
/// </list>
/// Lanes never mix, so SIMD and scalar code give the same bits. Threads split N.
/// </summary>
internal static unsafe class GemmGemvChain
{
    public static bool Applies(in GemmOperand a, in GemmOperand b) =>
        a.Rows == 1 && a.Cols > 0 && b.Cols > 0 && (b.RowStride == 1 || b.ColStride == 1) && b.DType is DType.Float32 or DType.BFloat16;

    public static void Run(in GemmOperand a, in GemmOperand b, float* c, GemmKernel kernel, int threads)
    {
        int k = a.Cols, n = b.Cols;
        float* row = GemmScratch.Current.Row(k);
        GemmPacking.WidenRow(a, 0, row);
        bool simd = kernel != GemmKernel.Scalar && Avx2.IsSupported && Fma.IsSupported;
        int tasks = (long)k * n < GemmBlocking.ParallelThreshold ? 1 : Math.Clamp(n / 64, 1, threads);
        GemmThreadPool.Shared.Run(new Job(row, b, c, simd, tasks), tasks);
    }

    private sealed class Job(float* x, GemmOperand b, float* c, bool simd, int tasks) : GemmJob
    {
        public override void Execute(int task)
        {
            int n = b.Cols;
            // Column ranges aligned to 32 so the SIMD blocks are the same whatever the thread count (not needed for
            // the bits, which never depend on blocking, but it keeps the work even).
            int blocks = (n + 31) / 32;
            int j0 = Math.Min(n, (int)((long)blocks * task / tasks) * 32), j1 = Math.Min(n, (int)((long)blocks * (task + 1) / tasks) * 32);
            bool bf16 = b.DType == DType.BFloat16;
            if (b.ColStride == 1)
            {
                if (bf16) RowMajor<GemmBF16>(x, b, c, j0, j1, simd); else RowMajor<GemmF32>(x, b, c, j0, j1, simd);
            }
            else
            {
                if (bf16) ColumnMajor<GemmBF16>(x, b, c, j0, j1, simd); else ColumnMajor<GemmF32>(x, b, c, j0, j1, simd);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load8<T>(byte* origin, nint index) where T : struct, IGemmElement =>
        typeof(T) == typeof(GemmF32)
            ? Vector256.Load((float*)origin + index)
            : Vector256.ShiftLeft(Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)origin + index)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowMajor<T>(float* x, in GemmOperand b, float* c, int j0, int j1, bool simd) where T : struct, IGemmElement
    {
        int k = b.Rows;
        nint rs = b.RowStride;
        byte* origin = b.Origin;
        int j = j0;
        if (simd)
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
            for (; j + 8 <= j1; j += 8)
            {
                var s0 = Vector256<float>.Zero;
                nint idx = j;
                for (int p = 0; p < k; p++, idx += rs) s0 = Fma.MultiplyAdd(Vector256.Create(x[p]), Load8<T>(origin, idx), s0);
                s0.Store(c + j);
            }
        }
        for (; j < j1; j++)
        {
            float s = 0;
            nint idx = j;
            for (int p = 0; p < k; p++, idx += rs) s = MathF.FusedMultiplyAdd(x[p], T.Load(origin, idx), s);
            c[j] = s;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ColumnMajor<T>(float* x, in GemmOperand b, float* c, int j0, int j1, bool simd) where T : struct, IGemmElement
    {
        int k = b.Rows;
        nint cs = b.ColStride;
        byte* origin = b.Origin;
        int j = j0;
        if (simd)
        {
            for (; j + 8 <= j1; j += 8)
            {
                var acc = Vector256<float>.Zero;
                nint col = j * cs;
                int p = 0;
                for (; p + 8 <= k; p += 8)
                {
                    nint i0 = col + p;
                    var v0 = Load8<T>(origin, i0); var v1 = Load8<T>(origin, i0 + cs);
                    var v2 = Load8<T>(origin, i0 + 2 * cs); var v3 = Load8<T>(origin, i0 + 3 * cs);
                    var v4 = Load8<T>(origin, i0 + 4 * cs); var v5 = Load8<T>(origin, i0 + 5 * cs);
                    var v6 = Load8<T>(origin, i0 + 6 * cs); var v7 = Load8<T>(origin, i0 + 7 * cs);
                    // 8 x 8 transpose: r_q holds element p + q of the 8 columns.
                    var t0 = Avx.UnpackLow(v0, v1); var t1 = Avx.UnpackHigh(v0, v1);
                    var t2 = Avx.UnpackLow(v2, v3); var t3 = Avx.UnpackHigh(v2, v3);
                    var t4 = Avx.UnpackLow(v4, v5); var t5 = Avx.UnpackHigh(v4, v5);
                    var t6 = Avx.UnpackLow(v6, v7); var t7 = Avx.UnpackHigh(v6, v7);
                    var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
                    var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
                    var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
                    var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p]), Avx.Permute2x128(u0, u4, 0x20), acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p + 1]), Avx.Permute2x128(u1, u5, 0x20), acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p + 2]), Avx.Permute2x128(u2, u6, 0x20), acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p + 3]), Avx.Permute2x128(u3, u7, 0x20), acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p + 4]), Avx.Permute2x128(u0, u4, 0x31), acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p + 5]), Avx.Permute2x128(u1, u5, 0x31), acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p + 6]), Avx.Permute2x128(u2, u6, 0x31), acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p + 7]), Avx.Permute2x128(u3, u7, 0x31), acc);
                }
                for (; p < k; p++)
                {
                    nint i = col + p;
                    var v = Vector256.Create(T.Load(origin, i), T.Load(origin, i + cs), T.Load(origin, i + 2 * cs), T.Load(origin, i + 3 * cs),
                        T.Load(origin, i + 4 * cs), T.Load(origin, i + 5 * cs), T.Load(origin, i + 6 * cs), T.Load(origin, i + 7 * cs));
                    acc = Fma.MultiplyAdd(Vector256.Create(x[p]), v, acc);
                }
                acc.Store(c + j);
            }
        }
        for (; j < j1; j++)
        {
            float s = 0;
            nint idx = j * cs;
            for (int p = 0; p < k; p++, idx++) s = MathF.FusedMultiplyAdd(x[p], T.Load(origin, idx), s);
            c[j] = s;
        }
    }
}
