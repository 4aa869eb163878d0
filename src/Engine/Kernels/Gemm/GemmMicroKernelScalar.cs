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
        // One element at a time, two independent chains (columns j and j + 1) in registers; k ascending.
        for (int i = 0; i < mr; i++)
        {
            float* crow = c + i * ldc;
            for (int j = 0; j < nr; j += 2)
            {
                float s0 = accumulate ? crow[j] : 0f, s1 = accumulate ? crow[j + 1] : 0f;
                float* ap = a + i, bp = b + j;
                for (int k = 0; k < kc; k++, ap += mr, bp += nr)
                {
                    s0 = MathF.FusedMultiplyAdd(*ap, bp[0], s0);
                    s1 = MathF.FusedMultiplyAdd(*ap, bp[1], s1);
                }
                crow[j] = s0;
                crow[j + 1] = s1;
            }
        }
    }
}
