using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// AVX-512F 14x32 micro-kernel: 28 zmm accumulators, 2 zmm B loads and one broadcast per k (31 of 32 zmm registers),
/// so each B load feeds 14 FMAs. k unrolled by 2.
/// </summary>
internal readonly unsafe struct GemmMicroKernelAvx512 : IGemmMicroKernel
{
    public static int MR => 14;
    public static int NR => 32;
    public static GemmBlocking Blocking => new(KC: 192, MC: 168, NC: 4096);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool accumulate)
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71, c80, c81, c90, c91, c100, c101, c110, c111, c120, c121, c130, c131;
        if (accumulate)
        {
            c00 = Avx512F.LoadVector512(c + 0 * ldc); c01 = Avx512F.LoadVector512(c + 0 * ldc + 16);
            c10 = Avx512F.LoadVector512(c + 1 * ldc); c11 = Avx512F.LoadVector512(c + 1 * ldc + 16);
            c20 = Avx512F.LoadVector512(c + 2 * ldc); c21 = Avx512F.LoadVector512(c + 2 * ldc + 16);
            c30 = Avx512F.LoadVector512(c + 3 * ldc); c31 = Avx512F.LoadVector512(c + 3 * ldc + 16);
            c40 = Avx512F.LoadVector512(c + 4 * ldc); c41 = Avx512F.LoadVector512(c + 4 * ldc + 16);
            c50 = Avx512F.LoadVector512(c + 5 * ldc); c51 = Avx512F.LoadVector512(c + 5 * ldc + 16);
            c60 = Avx512F.LoadVector512(c + 6 * ldc); c61 = Avx512F.LoadVector512(c + 6 * ldc + 16);
            c70 = Avx512F.LoadVector512(c + 7 * ldc); c71 = Avx512F.LoadVector512(c + 7 * ldc + 16);
            c80 = Avx512F.LoadVector512(c + 8 * ldc); c81 = Avx512F.LoadVector512(c + 8 * ldc + 16);
            c90 = Avx512F.LoadVector512(c + 9 * ldc); c91 = Avx512F.LoadVector512(c + 9 * ldc + 16);
            c100 = Avx512F.LoadVector512(c + 10 * ldc); c101 = Avx512F.LoadVector512(c + 10 * ldc + 16);
            c110 = Avx512F.LoadVector512(c + 11 * ldc); c111 = Avx512F.LoadVector512(c + 11 * ldc + 16);
            c120 = Avx512F.LoadVector512(c + 12 * ldc); c121 = Avx512F.LoadVector512(c + 12 * ldc + 16);
            c130 = Avx512F.LoadVector512(c + 13 * ldc); c131 = Avx512F.LoadVector512(c + 13 * ldc + 16);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = c80 = c81 = c90 = c91 = c100 = c101 = c110 = c111 = c120 = c121 = c130 = c131 = Vector512<float>.Zero;
        }
        int k = 0;
        for (; k + 2 <= kc; k += 2)
        {
            {
                var b0 = Avx512F.LoadVector512(b + 0); var b1 = Avx512F.LoadVector512(b + 16);
                var a0 = Vector512.Create(a[0]); c00 = Avx512F.FusedMultiplyAdd(a0, b0, c00); c01 = Avx512F.FusedMultiplyAdd(a0, b1, c01);
                var a1 = Vector512.Create(a[1]); c10 = Avx512F.FusedMultiplyAdd(a1, b0, c10); c11 = Avx512F.FusedMultiplyAdd(a1, b1, c11);
                var a2 = Vector512.Create(a[2]); c20 = Avx512F.FusedMultiplyAdd(a2, b0, c20); c21 = Avx512F.FusedMultiplyAdd(a2, b1, c21);
                var a3 = Vector512.Create(a[3]); c30 = Avx512F.FusedMultiplyAdd(a3, b0, c30); c31 = Avx512F.FusedMultiplyAdd(a3, b1, c31);
                var a4 = Vector512.Create(a[4]); c40 = Avx512F.FusedMultiplyAdd(a4, b0, c40); c41 = Avx512F.FusedMultiplyAdd(a4, b1, c41);
                var a5 = Vector512.Create(a[5]); c50 = Avx512F.FusedMultiplyAdd(a5, b0, c50); c51 = Avx512F.FusedMultiplyAdd(a5, b1, c51);
                var a6 = Vector512.Create(a[6]); c60 = Avx512F.FusedMultiplyAdd(a6, b0, c60); c61 = Avx512F.FusedMultiplyAdd(a6, b1, c61);
                var a7 = Vector512.Create(a[7]); c70 = Avx512F.FusedMultiplyAdd(a7, b0, c70); c71 = Avx512F.FusedMultiplyAdd(a7, b1, c71);
                var a8 = Vector512.Create(a[8]); c80 = Avx512F.FusedMultiplyAdd(a8, b0, c80); c81 = Avx512F.FusedMultiplyAdd(a8, b1, c81);
                var a9 = Vector512.Create(a[9]); c90 = Avx512F.FusedMultiplyAdd(a9, b0, c90); c91 = Avx512F.FusedMultiplyAdd(a9, b1, c91);
                var a10 = Vector512.Create(a[10]); c100 = Avx512F.FusedMultiplyAdd(a10, b0, c100); c101 = Avx512F.FusedMultiplyAdd(a10, b1, c101);
                var a11 = Vector512.Create(a[11]); c110 = Avx512F.FusedMultiplyAdd(a11, b0, c110); c111 = Avx512F.FusedMultiplyAdd(a11, b1, c111);
                var a12 = Vector512.Create(a[12]); c120 = Avx512F.FusedMultiplyAdd(a12, b0, c120); c121 = Avx512F.FusedMultiplyAdd(a12, b1, c121);
                var a13 = Vector512.Create(a[13]); c130 = Avx512F.FusedMultiplyAdd(a13, b0, c130); c131 = Avx512F.FusedMultiplyAdd(a13, b1, c131);
            }
            {
                var b0 = Avx512F.LoadVector512(b + 32); var b1 = Avx512F.LoadVector512(b + 48);
                var a0 = Vector512.Create(a[14]); c00 = Avx512F.FusedMultiplyAdd(a0, b0, c00); c01 = Avx512F.FusedMultiplyAdd(a0, b1, c01);
                var a1 = Vector512.Create(a[15]); c10 = Avx512F.FusedMultiplyAdd(a1, b0, c10); c11 = Avx512F.FusedMultiplyAdd(a1, b1, c11);
                var a2 = Vector512.Create(a[16]); c20 = Avx512F.FusedMultiplyAdd(a2, b0, c20); c21 = Avx512F.FusedMultiplyAdd(a2, b1, c21);
                var a3 = Vector512.Create(a[17]); c30 = Avx512F.FusedMultiplyAdd(a3, b0, c30); c31 = Avx512F.FusedMultiplyAdd(a3, b1, c31);
                var a4 = Vector512.Create(a[18]); c40 = Avx512F.FusedMultiplyAdd(a4, b0, c40); c41 = Avx512F.FusedMultiplyAdd(a4, b1, c41);
                var a5 = Vector512.Create(a[19]); c50 = Avx512F.FusedMultiplyAdd(a5, b0, c50); c51 = Avx512F.FusedMultiplyAdd(a5, b1, c51);
                var a6 = Vector512.Create(a[20]); c60 = Avx512F.FusedMultiplyAdd(a6, b0, c60); c61 = Avx512F.FusedMultiplyAdd(a6, b1, c61);
                var a7 = Vector512.Create(a[21]); c70 = Avx512F.FusedMultiplyAdd(a7, b0, c70); c71 = Avx512F.FusedMultiplyAdd(a7, b1, c71);
                var a8 = Vector512.Create(a[22]); c80 = Avx512F.FusedMultiplyAdd(a8, b0, c80); c81 = Avx512F.FusedMultiplyAdd(a8, b1, c81);
                var a9 = Vector512.Create(a[23]); c90 = Avx512F.FusedMultiplyAdd(a9, b0, c90); c91 = Avx512F.FusedMultiplyAdd(a9, b1, c91);
                var a10 = Vector512.Create(a[24]); c100 = Avx512F.FusedMultiplyAdd(a10, b0, c100); c101 = Avx512F.FusedMultiplyAdd(a10, b1, c101);
                var a11 = Vector512.Create(a[25]); c110 = Avx512F.FusedMultiplyAdd(a11, b0, c110); c111 = Avx512F.FusedMultiplyAdd(a11, b1, c111);
                var a12 = Vector512.Create(a[26]); c120 = Avx512F.FusedMultiplyAdd(a12, b0, c120); c121 = Avx512F.FusedMultiplyAdd(a12, b1, c121);
                var a13 = Vector512.Create(a[27]); c130 = Avx512F.FusedMultiplyAdd(a13, b0, c130); c131 = Avx512F.FusedMultiplyAdd(a13, b1, c131);
            }
            a += 28;
            b += 64;
        }
        for (; k < kc; k++)
        {
            var b0 = Avx512F.LoadVector512(b + 0); var b1 = Avx512F.LoadVector512(b + 16);
            var a0 = Vector512.Create(a[0]); c00 = Avx512F.FusedMultiplyAdd(a0, b0, c00); c01 = Avx512F.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector512.Create(a[1]); c10 = Avx512F.FusedMultiplyAdd(a1, b0, c10); c11 = Avx512F.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector512.Create(a[2]); c20 = Avx512F.FusedMultiplyAdd(a2, b0, c20); c21 = Avx512F.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector512.Create(a[3]); c30 = Avx512F.FusedMultiplyAdd(a3, b0, c30); c31 = Avx512F.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector512.Create(a[4]); c40 = Avx512F.FusedMultiplyAdd(a4, b0, c40); c41 = Avx512F.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector512.Create(a[5]); c50 = Avx512F.FusedMultiplyAdd(a5, b0, c50); c51 = Avx512F.FusedMultiplyAdd(a5, b1, c51);
            var a6 = Vector512.Create(a[6]); c60 = Avx512F.FusedMultiplyAdd(a6, b0, c60); c61 = Avx512F.FusedMultiplyAdd(a6, b1, c61);
            var a7 = Vector512.Create(a[7]); c70 = Avx512F.FusedMultiplyAdd(a7, b0, c70); c71 = Avx512F.FusedMultiplyAdd(a7, b1, c71);
            var a8 = Vector512.Create(a[8]); c80 = Avx512F.FusedMultiplyAdd(a8, b0, c80); c81 = Avx512F.FusedMultiplyAdd(a8, b1, c81);
            var a9 = Vector512.Create(a[9]); c90 = Avx512F.FusedMultiplyAdd(a9, b0, c90); c91 = Avx512F.FusedMultiplyAdd(a9, b1, c91);
            var a10 = Vector512.Create(a[10]); c100 = Avx512F.FusedMultiplyAdd(a10, b0, c100); c101 = Avx512F.FusedMultiplyAdd(a10, b1, c101);
            var a11 = Vector512.Create(a[11]); c110 = Avx512F.FusedMultiplyAdd(a11, b0, c110); c111 = Avx512F.FusedMultiplyAdd(a11, b1, c111);
            var a12 = Vector512.Create(a[12]); c120 = Avx512F.FusedMultiplyAdd(a12, b0, c120); c121 = Avx512F.FusedMultiplyAdd(a12, b1, c121);
            var a13 = Vector512.Create(a[13]); c130 = Avx512F.FusedMultiplyAdd(a13, b0, c130); c131 = Avx512F.FusedMultiplyAdd(a13, b1, c131);
            a += 14;
            b += 32;
        }
        Avx512F.Store(c + 0 * ldc, c00); Avx512F.Store(c + 0 * ldc + 16, c01);
        Avx512F.Store(c + 1 * ldc, c10); Avx512F.Store(c + 1 * ldc + 16, c11);
        Avx512F.Store(c + 2 * ldc, c20); Avx512F.Store(c + 2 * ldc + 16, c21);
        Avx512F.Store(c + 3 * ldc, c30); Avx512F.Store(c + 3 * ldc + 16, c31);
        Avx512F.Store(c + 4 * ldc, c40); Avx512F.Store(c + 4 * ldc + 16, c41);
        Avx512F.Store(c + 5 * ldc, c50); Avx512F.Store(c + 5 * ldc + 16, c51);
        Avx512F.Store(c + 6 * ldc, c60); Avx512F.Store(c + 6 * ldc + 16, c61);
        Avx512F.Store(c + 7 * ldc, c70); Avx512F.Store(c + 7 * ldc + 16, c71);
        Avx512F.Store(c + 8 * ldc, c80); Avx512F.Store(c + 8 * ldc + 16, c81);
        Avx512F.Store(c + 9 * ldc, c90); Avx512F.Store(c + 9 * ldc + 16, c91);
        Avx512F.Store(c + 10 * ldc, c100); Avx512F.Store(c + 10 * ldc + 16, c101);
        Avx512F.Store(c + 11 * ldc, c110); Avx512F.Store(c + 11 * ldc + 16, c111);
        Avx512F.Store(c + 12 * ldc, c120); Avx512F.Store(c + 12 * ldc + 16, c121);
        Avx512F.Store(c + 13 * ldc, c130); Avx512F.Store(c + 13 * ldc + 16, c131);
    }
}
