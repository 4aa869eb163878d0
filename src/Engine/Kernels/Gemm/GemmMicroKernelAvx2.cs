using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// AVX2 + FMA 6x16 micro-kernel (Zen3, Haswell and later): 12 ymm accumulators, 2 ymm B loads and one broadcast
/// per k, 12 independent FMA chains (enough to cover 2 FMA pipes x 4-cycle latency). k unrolled by 4.
/// </summary>
internal readonly unsafe struct GemmMicroKernelAvx2 : IGemmMicroKernel
{
    public static int MR => 6;
    public static int NR => 16;
    public static GemmBlocking Blocking => new(KC: 256, MC: 144, NC: 4096);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool accumulate)
    {
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
        if (accumulate)
        {
            c00 = Avx.LoadVector256(c + 0 * ldc); c01 = Avx.LoadVector256(c + 0 * ldc + 8);
            c10 = Avx.LoadVector256(c + 1 * ldc); c11 = Avx.LoadVector256(c + 1 * ldc + 8);
            c20 = Avx.LoadVector256(c + 2 * ldc); c21 = Avx.LoadVector256(c + 2 * ldc + 8);
            c30 = Avx.LoadVector256(c + 3 * ldc); c31 = Avx.LoadVector256(c + 3 * ldc + 8);
            c40 = Avx.LoadVector256(c + 4 * ldc); c41 = Avx.LoadVector256(c + 4 * ldc + 8);
            c50 = Avx.LoadVector256(c + 5 * ldc); c51 = Avx.LoadVector256(c + 5 * ldc + 8);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = Vector256<float>.Zero;
        }
        int k = 0;
        for (; k + 4 <= kc; k += 4)
        {
            {
                var b0 = Avx.LoadVector256(b + 0); var b1 = Avx.LoadVector256(b + 8);
                var a0 = Avx.BroadcastScalarToVector256(a + 0); c00 = Fma.MultiplyAdd(a0, b0, c00); c01 = Fma.MultiplyAdd(a0, b1, c01);
                var a1 = Avx.BroadcastScalarToVector256(a + 1); c10 = Fma.MultiplyAdd(a1, b0, c10); c11 = Fma.MultiplyAdd(a1, b1, c11);
                var a2 = Avx.BroadcastScalarToVector256(a + 2); c20 = Fma.MultiplyAdd(a2, b0, c20); c21 = Fma.MultiplyAdd(a2, b1, c21);
                var a3 = Avx.BroadcastScalarToVector256(a + 3); c30 = Fma.MultiplyAdd(a3, b0, c30); c31 = Fma.MultiplyAdd(a3, b1, c31);
                var a4 = Avx.BroadcastScalarToVector256(a + 4); c40 = Fma.MultiplyAdd(a4, b0, c40); c41 = Fma.MultiplyAdd(a4, b1, c41);
                var a5 = Avx.BroadcastScalarToVector256(a + 5); c50 = Fma.MultiplyAdd(a5, b0, c50); c51 = Fma.MultiplyAdd(a5, b1, c51);
            }
            {
                var b0 = Avx.LoadVector256(b + 16); var b1 = Avx.LoadVector256(b + 24);
                var a0 = Avx.BroadcastScalarToVector256(a + 6); c00 = Fma.MultiplyAdd(a0, b0, c00); c01 = Fma.MultiplyAdd(a0, b1, c01);
                var a1 = Avx.BroadcastScalarToVector256(a + 7); c10 = Fma.MultiplyAdd(a1, b0, c10); c11 = Fma.MultiplyAdd(a1, b1, c11);
                var a2 = Avx.BroadcastScalarToVector256(a + 8); c20 = Fma.MultiplyAdd(a2, b0, c20); c21 = Fma.MultiplyAdd(a2, b1, c21);
                var a3 = Avx.BroadcastScalarToVector256(a + 9); c30 = Fma.MultiplyAdd(a3, b0, c30); c31 = Fma.MultiplyAdd(a3, b1, c31);
                var a4 = Avx.BroadcastScalarToVector256(a + 10); c40 = Fma.MultiplyAdd(a4, b0, c40); c41 = Fma.MultiplyAdd(a4, b1, c41);
                var a5 = Avx.BroadcastScalarToVector256(a + 11); c50 = Fma.MultiplyAdd(a5, b0, c50); c51 = Fma.MultiplyAdd(a5, b1, c51);
            }
            {
                var b0 = Avx.LoadVector256(b + 32); var b1 = Avx.LoadVector256(b + 40);
                var a0 = Avx.BroadcastScalarToVector256(a + 12); c00 = Fma.MultiplyAdd(a0, b0, c00); c01 = Fma.MultiplyAdd(a0, b1, c01);
                var a1 = Avx.BroadcastScalarToVector256(a + 13); c10 = Fma.MultiplyAdd(a1, b0, c10); c11 = Fma.MultiplyAdd(a1, b1, c11);
                var a2 = Avx.BroadcastScalarToVector256(a + 14); c20 = Fma.MultiplyAdd(a2, b0, c20); c21 = Fma.MultiplyAdd(a2, b1, c21);
                var a3 = Avx.BroadcastScalarToVector256(a + 15); c30 = Fma.MultiplyAdd(a3, b0, c30); c31 = Fma.MultiplyAdd(a3, b1, c31);
                var a4 = Avx.BroadcastScalarToVector256(a + 16); c40 = Fma.MultiplyAdd(a4, b0, c40); c41 = Fma.MultiplyAdd(a4, b1, c41);
                var a5 = Avx.BroadcastScalarToVector256(a + 17); c50 = Fma.MultiplyAdd(a5, b0, c50); c51 = Fma.MultiplyAdd(a5, b1, c51);
            }
            {
                var b0 = Avx.LoadVector256(b + 48); var b1 = Avx.LoadVector256(b + 56);
                var a0 = Avx.BroadcastScalarToVector256(a + 18); c00 = Fma.MultiplyAdd(a0, b0, c00); c01 = Fma.MultiplyAdd(a0, b1, c01);
                var a1 = Avx.BroadcastScalarToVector256(a + 19); c10 = Fma.MultiplyAdd(a1, b0, c10); c11 = Fma.MultiplyAdd(a1, b1, c11);
                var a2 = Avx.BroadcastScalarToVector256(a + 20); c20 = Fma.MultiplyAdd(a2, b0, c20); c21 = Fma.MultiplyAdd(a2, b1, c21);
                var a3 = Avx.BroadcastScalarToVector256(a + 21); c30 = Fma.MultiplyAdd(a3, b0, c30); c31 = Fma.MultiplyAdd(a3, b1, c31);
                var a4 = Avx.BroadcastScalarToVector256(a + 22); c40 = Fma.MultiplyAdd(a4, b0, c40); c41 = Fma.MultiplyAdd(a4, b1, c41);
                var a5 = Avx.BroadcastScalarToVector256(a + 23); c50 = Fma.MultiplyAdd(a5, b0, c50); c51 = Fma.MultiplyAdd(a5, b1, c51);
            }
            a += 24;
            b += 64;
        }
        for (; k < kc; k++)
        {
            var b0 = Avx.LoadVector256(b + 0); var b1 = Avx.LoadVector256(b + 8);
            var a0 = Avx.BroadcastScalarToVector256(a + 0); c00 = Fma.MultiplyAdd(a0, b0, c00); c01 = Fma.MultiplyAdd(a0, b1, c01);
            var a1 = Avx.BroadcastScalarToVector256(a + 1); c10 = Fma.MultiplyAdd(a1, b0, c10); c11 = Fma.MultiplyAdd(a1, b1, c11);
            var a2 = Avx.BroadcastScalarToVector256(a + 2); c20 = Fma.MultiplyAdd(a2, b0, c20); c21 = Fma.MultiplyAdd(a2, b1, c21);
            var a3 = Avx.BroadcastScalarToVector256(a + 3); c30 = Fma.MultiplyAdd(a3, b0, c30); c31 = Fma.MultiplyAdd(a3, b1, c31);
            var a4 = Avx.BroadcastScalarToVector256(a + 4); c40 = Fma.MultiplyAdd(a4, b0, c40); c41 = Fma.MultiplyAdd(a4, b1, c41);
            var a5 = Avx.BroadcastScalarToVector256(a + 5); c50 = Fma.MultiplyAdd(a5, b0, c50); c51 = Fma.MultiplyAdd(a5, b1, c51);
            a += 6;
            b += 16;
        }
        Avx.Store(c + 0 * ldc, c00); Avx.Store(c + 0 * ldc + 8, c01);
        Avx.Store(c + 1 * ldc, c10); Avx.Store(c + 1 * ldc + 8, c11);
        Avx.Store(c + 2 * ldc, c20); Avx.Store(c + 2 * ldc + 8, c21);
        Avx.Store(c + 3 * ldc, c30); Avx.Store(c + 3 * ldc + 8, c31);
        Avx.Store(c + 4 * ldc, c40); Avx.Store(c + 4 * ldc + 8, c41);
        Avx.Store(c + 5 * ldc, c50); Avx.Store(c + 5 * ldc + 8, c51);
    }
}
