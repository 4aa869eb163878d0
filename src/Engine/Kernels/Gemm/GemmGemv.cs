using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// Normal-mode fast path for one row of A (decode: x[1, K] times W^T): when B is contiguous along K (RowStride 1,
/// float32 or bfloat16, e.g. B = W^T of a [N, K] weight), each C element is a dot product vectorised along K with
/// independent partial sums (AVX2: four columns at a time, 2 x 8 lanes each, the N tail with 4 x 8 lanes; AVX-512:
/// 4 x 16 lanes; scalar kernel: 4 scalars), reduced pairwise, then the K tail with scalar FMAs. B is streamed once without packing. The order differs from
/// the blocked path's single FMA chain, so this path is never used in batch-invariant mode. Threads split N.
/// It is deterministic for a shape: each C element is one dot product whose order depends on K and the kernel only.
/// </summary>
internal static unsafe class GemmGemv
{
    /// <summary>Minimum K for the path (shorter rows gain nothing from partial sums).</summary>
    public const int MinK = 32;

    public static bool Applies(in GemmOperand a, in GemmOperand b) =>
        a.Rows == 1 && a.Cols >= MinK && b.RowStride == 1 && b.Cols > 0 && b.DType is DType.Float32 or DType.BFloat16;

    public static void Run(in GemmOperand a, in GemmOperand b, float* c, GemmKernel kernel, int threads)
    {
        int k = a.Cols, n = b.Cols;
        float* row = GemmScratch.Current.Row(k);
        GemmPacking.WidenRow(a, 0, row);
        var job = new Job(row, b, c, kernel);
        const int columnsPerTaskMin = 64;
        int tasks = (long)k * n < GemmBlocking.ParallelThreshold ? 1 : Math.Clamp(n / columnsPerTaskMin, 1, threads);
        job.Tasks = tasks;
        GemmThreadPool.Shared.Run(job, tasks);
    }

    private sealed class Job(float* row, GemmOperand b, float* c, GemmKernel kernel) : GemmJob
    {
        public int Tasks;

        public override void Execute(int task)
        {
            int n = b.Cols;
            int j0 = (int)((long)n * task / Tasks), j1 = (int)((long)n * (task + 1) / Tasks);
            int k = b.Rows;
            int size = b.DType == DType.Float32 ? 4 : 2;
            int j = j0;
            if (kernel == GemmKernel.Avx2)
            {
                // Four columns at once: four independent B streams, two partial sums each.
                nint step = b.ColStride * size;
                for (; j + 4 <= j1; j += 4)
                {
                    byte* col = b.Origin + j * step;
                    if (b.DType == DType.Float32) Dot256x4(row, (float*)col, (float*)(col + step), (float*)(col + 2 * step), (float*)(col + 3 * step), k, c + j);
                    else Dot256x4(row, (ushort*)col, (ushort*)(col + step), (ushort*)(col + 2 * step), (ushort*)(col + 3 * step), k, c + j);
                }
            }
            for (; j < j1; j++)
            {
                byte* col = b.Origin + j * b.ColStride * size;
                c[j] = (kernel, b.DType) switch
                {
                    (GemmKernel.Avx512, DType.Float32) => Dot512(row, (float*)col, k),
                    (GemmKernel.Avx512, _) => Dot512(row, (ushort*)col, k),
                    (GemmKernel.Avx2, DType.Float32) => Dot256(row, (float*)col, k),
                    (GemmKernel.Avx2, _) => Dot256(row, (ushort*)col, k),
                    (_, DType.Float32) => DotScalar<GemmF32>(row, (byte*)col, k),
                    _ => DotScalar<GemmBF16>(row, (byte*)col, k),
                };
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load256(float* p) => Vector256.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load256(ushort* p) =>
        Vector256.ShiftLeft(Vector256.WidenLower(Vector128.Load(p).ToVector256Unsafe()), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Load512(float* p) => Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Load512(ushort* p) =>
        Vector512.ShiftLeft(Vector512.WidenLower(Vector256.Load(p).ToVector512Unsafe()), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Scalar(float* p, int i) => p[i];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Scalar(ushort* p, int i) => BitConverter.UInt32BitsToSingle((uint)p[i] << 16);

    /// <summary>Four columns; per column the order is: partial sums s0 (even 8-blocks) and s1 (odd 8-blocks), then s0 + s1, horizontal sum, scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot256x4(float* x, float* y0, float* y1, float* y2, float* y3, int k, float* c)
    {
        var a0 = Vector256<float>.Zero; var a1 = a0; var b0 = a0; var b1 = a0; var c0 = a0; var c1 = a0; var d0 = a0; var d1 = a0;
        int i = 0;
        for (; i + 16 <= k; i += 16)
        {
            var x0 = Vector256.Load(x + i); var x1 = Vector256.Load(x + i + 8);
            a0 = Vector256.FusedMultiplyAdd(x0, Load256(y0 + i), a0); a1 = Vector256.FusedMultiplyAdd(x1, Load256(y0 + i + 8), a1);
            b0 = Vector256.FusedMultiplyAdd(x0, Load256(y1 + i), b0); b1 = Vector256.FusedMultiplyAdd(x1, Load256(y1 + i + 8), b1);
            c0 = Vector256.FusedMultiplyAdd(x0, Load256(y2 + i), c0); c1 = Vector256.FusedMultiplyAdd(x1, Load256(y2 + i + 8), c1);
            d0 = Vector256.FusedMultiplyAdd(x0, Load256(y3 + i), d0); d1 = Vector256.FusedMultiplyAdd(x1, Load256(y3 + i + 8), d1);
        }
        if (i + 8 <= k)
        {
            var x0 = Vector256.Load(x + i);
            a0 = Vector256.FusedMultiplyAdd(x0, Load256(y0 + i), a0); b0 = Vector256.FusedMultiplyAdd(x0, Load256(y1 + i), b0);
            c0 = Vector256.FusedMultiplyAdd(x0, Load256(y2 + i), c0); d0 = Vector256.FusedMultiplyAdd(x0, Load256(y3 + i), d0);
            i += 8;
        }
        float sa = Vector256.Sum(a0 + a1), sb = Vector256.Sum(b0 + b1), sc = Vector256.Sum(c0 + c1), sd = Vector256.Sum(d0 + d1);
        for (; i < k; i++)
        {
            sa = MathF.FusedMultiplyAdd(x[i], y0[i], sa); sb = MathF.FusedMultiplyAdd(x[i], y1[i], sb);
            sc = MathF.FusedMultiplyAdd(x[i], y2[i], sc); sd = MathF.FusedMultiplyAdd(x[i], y3[i], sd);
        }
        c[0] = sa; c[1] = sb; c[2] = sc; c[3] = sd;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot256x4(float* x, ushort* y0, ushort* y1, ushort* y2, ushort* y3, int k, float* c)
    {
        var a0 = Vector256<float>.Zero; var a1 = a0; var b0 = a0; var b1 = a0; var c0 = a0; var c1 = a0; var d0 = a0; var d1 = a0;
        int i = 0;
        for (; i + 16 <= k; i += 16)
        {
            var x0 = Vector256.Load(x + i); var x1 = Vector256.Load(x + i + 8);
            a0 = Vector256.FusedMultiplyAdd(x0, Load256(y0 + i), a0); a1 = Vector256.FusedMultiplyAdd(x1, Load256(y0 + i + 8), a1);
            b0 = Vector256.FusedMultiplyAdd(x0, Load256(y1 + i), b0); b1 = Vector256.FusedMultiplyAdd(x1, Load256(y1 + i + 8), b1);
            c0 = Vector256.FusedMultiplyAdd(x0, Load256(y2 + i), c0); c1 = Vector256.FusedMultiplyAdd(x1, Load256(y2 + i + 8), c1);
            d0 = Vector256.FusedMultiplyAdd(x0, Load256(y3 + i), d0); d1 = Vector256.FusedMultiplyAdd(x1, Load256(y3 + i + 8), d1);
        }
        if (i + 8 <= k)
        {
            var x0 = Vector256.Load(x + i);
            a0 = Vector256.FusedMultiplyAdd(x0, Load256(y0 + i), a0); b0 = Vector256.FusedMultiplyAdd(x0, Load256(y1 + i), b0);
            c0 = Vector256.FusedMultiplyAdd(x0, Load256(y2 + i), c0); d0 = Vector256.FusedMultiplyAdd(x0, Load256(y3 + i), d0);
            i += 8;
        }
        float sa = Vector256.Sum(a0 + a1), sb = Vector256.Sum(b0 + b1), sc = Vector256.Sum(c0 + c1), sd = Vector256.Sum(d0 + d1);
        for (; i < k; i++)
        {
            sa = MathF.FusedMultiplyAdd(x[i], Scalar(y0, i), sa); sb = MathF.FusedMultiplyAdd(x[i], Scalar(y1, i), sb);
            sc = MathF.FusedMultiplyAdd(x[i], Scalar(y2, i), sc); sd = MathF.FusedMultiplyAdd(x[i], Scalar(y3, i), sd);
        }
        c[0] = sa; c[1] = sb; c[2] = sc; c[3] = sd;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot256(float* x, float* y, int k)
    {
        var s0 = Vector256<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
        int i = 0;
        for (; i + 32 <= k; i += 32)
        {
            s0 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i), Load256(y + i), s0);
            s1 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i + 8), Load256(y + i + 8), s1);
            s2 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i + 16), Load256(y + i + 16), s2);
            s3 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i + 24), Load256(y + i + 24), s3);
        }
        for (; i + 8 <= k; i += 8) s0 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i), Load256(y + i), s0);
        float sum = Vector256.Sum((s0 + s1) + (s2 + s3));
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], Scalar(y, i), sum);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot256(float* x, ushort* y, int k)
    {
        var s0 = Vector256<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
        int i = 0;
        for (; i + 32 <= k; i += 32)
        {
            s0 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i), Load256(y + i), s0);
            s1 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i + 8), Load256(y + i + 8), s1);
            s2 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i + 16), Load256(y + i + 16), s2);
            s3 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i + 24), Load256(y + i + 24), s3);
        }
        for (; i + 8 <= k; i += 8) s0 = Vector256.FusedMultiplyAdd(Vector256.Load(x + i), Load256(y + i), s0);
        float sum = Vector256.Sum((s0 + s1) + (s2 + s3));
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], Scalar(y, i), sum);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot512(float* x, float* y, int k)
    {
        var s0 = Vector512<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
        int i = 0;
        for (; i + 64 <= k; i += 64)
        {
            s0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i), Load512(y + i), s0);
            s1 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i + 16), Load512(y + i + 16), s1);
            s2 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i + 32), Load512(y + i + 32), s2);
            s3 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i + 48), Load512(y + i + 48), s3);
        }
        for (; i + 16 <= k; i += 16) s0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i), Load512(y + i), s0);
        float sum = Vector512.Sum((s0 + s1) + (s2 + s3));
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], Scalar(y, i), sum);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot512(float* x, ushort* y, int k)
    {
        var s0 = Vector512<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0;
        int i = 0;
        for (; i + 64 <= k; i += 64)
        {
            s0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i), Load512(y + i), s0);
            s1 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i + 16), Load512(y + i + 16), s1);
            s2 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i + 32), Load512(y + i + 32), s2);
            s3 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i + 48), Load512(y + i + 48), s3);
        }
        for (; i + 16 <= k; i += 16) s0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + i), Load512(y + i), s0);
        float sum = Vector512.Sum((s0 + s1) + (s2 + s3));
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], Scalar(y, i), sum);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotScalar<T>(float* x, byte* y, int k) where T : struct, IGemmElement
    {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= k; i += 4)
        {
            s0 = MathF.FusedMultiplyAdd(x[i], T.Load(y, i), s0);
            s1 = MathF.FusedMultiplyAdd(x[i + 1], T.Load(y, i + 1), s1);
            s2 = MathF.FusedMultiplyAdd(x[i + 2], T.Load(y, i + 2), s2);
            s3 = MathF.FusedMultiplyAdd(x[i + 3], T.Load(y, i + 3), s3);
        }
        float sum = (s0 + s1) + (s2 + s3);
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(x[i], T.Load(y, i), sum);
        return sum;
    }
}
