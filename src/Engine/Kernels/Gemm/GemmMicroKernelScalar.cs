using System.Runtime.CompilerServices;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// Portable 4x8 micro-kernel in plain C#: the fallback for CPUs without AVX2+FMA. Uses
/// <see cref="MathF.FusedMultiplyAdd"/> so its bits equal the SIMD kernels' (one rounding per step).
/// </summary>
internal readonly unsafe struct GemmMicroKernelScalar : IGemmMicroKernel
{
    public static int MR => 4;
    public static int NR => 8;
    public static GemmBlocking Blocking => new(KC: 256, MC: 64, NC: 2048);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool accumulate)
    {
        const int mr = 4, nr = 8;
        float* acc = stackalloc float[mr * nr];
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++)
                acc[i * nr + j] = accumulate ? c[i * ldc + j] : 0f;
        for (int k = 0; k < kc; k++)
        {
            for (int i = 0; i < mr; i++)
            {
                float ai = a[i];
                float* row = acc + i * nr;
                for (int j = 0; j < nr; j++) row[j] = MathF.FusedMultiplyAdd(ai, b[j], row[j]);
            }
            a += mr;
            b += nr;
        }
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++)
                c[i * ldc + j] = acc[i * nr + j];
    }
}
