using System.Runtime.CompilerServices;
namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// The blocked GotoBLAS/BLIS loop nest for one rectangular region of C, on the calling thread:
/// for each NC column block, for each KC block of K (ascending), pack B (KC x NC) once; for each MC row block,
/// pack A (MC x KC); then sweep NR panels of B (outer) and MR panels of A (inner) with the micro-kernel.
/// The first KC block starts each C element's FMA chain from zero, later blocks continue it from C, so every element
/// is reduced as c = fma(a_k, b_k, c) for k = 0..K-1 ascending, whatever the region, tile or thread: the result is
/// batch-invariant by construction. Edge tiles run the same micro-kernel on a zero-padded temporary tile.
/// </summary>
internal static unsafe class GemmDriver
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RunRegion<TK>(in GemmOperand a, in GemmOperand b, float* c, nint ldc, int m0, int m1, int n0, int n1)
        where TK : struct, IGemmMicroKernel
    {
        int k = a.Cols;
        if (m1 <= m0 || n1 <= n0) return;
        if (k == 0)
        {
            for (int i = m0; i < m1; i++) new Span<float>(c + i * ldc + n0, n1 - n0).Clear();
            return;
        }
        int mr = TK.MR, nr = TK.NR;
        var blocking = TK.Blocking;
        var scratch = GemmScratch.Current;
        int kcMax = Math.Min(blocking.KC, k);
        int ncMax = Math.Min(blocking.NC, RoundUp(n1 - n0, nr));
        int mcMax = Math.Min(blocking.MC, RoundUp(m1 - m0, mr));
        float* bufB = scratch.B((nint)ncMax * kcMax);
        float* bufA = scratch.A((nint)mcMax * kcMax);
        float* tile = scratch.Tile;

        for (int jc = n0; jc < n1; jc += blocking.NC)
        {
            int nc = Math.Min(blocking.NC, n1 - jc);
            for (int pc = 0; pc < k; pc += blocking.KC)
            {
                int kc = Math.Min(blocking.KC, k - pc);
                bool accumulate = pc > 0;
                GemmPacking.PackB(b, pc, kc, jc, nc, nr, bufB);
                for (int ic = m0; ic < m1; ic += blocking.MC)
                {
                    int mc = Math.Min(blocking.MC, m1 - ic);
                    GemmPacking.PackA(a, ic, mc, pc, kc, mr, bufA);
                    for (int jr = 0; jr < nc; jr += nr)
                    {
                        int w = Math.Min(nr, nc - jr);
                        float* bp = bufB + (nint)jr * kc;
                        float* cCol = c + jc + jr;
                        for (int ir = 0; ir < mc; ir += mr)
                        {
                            int h = Math.Min(mr, mc - ir);
                            float* ap = bufA + (nint)ir * kc;
                            float* cp = cCol + (ic + ir) * ldc;
                            if (h == mr && w == nr)
                            {
                                TK.Run(kc, ap, bp, cp, ldc, accumulate);
                            }
                            else
                            {
                                if (accumulate)
                                    for (int i = 0; i < h; i++)
                                        for (int j = 0; j < w; j++) tile[i * nr + j] = cp[i * ldc + j];
                                TK.Run(kc, ap, bp, tile, nr, accumulate);
                                for (int i = 0; i < h; i++)
                                    for (int j = 0; j < w; j++) cp[i * ldc + j] = tile[i * nr + j];
                            }
                        }
                    }
                }
            }
        }
    }

    public static void RunRegion(GemmKernel kernel, in GemmOperand a, in GemmOperand b, float* c, nint ldc, int m0, int m1, int n0, int n1)
    {
        switch (kernel)
        {
            case GemmKernel.Avx512: RunRegion<GemmMicroKernelAvx512>(a, b, c, ldc, m0, m1, n0, n1); break;
            case GemmKernel.Avx2: RunRegion<GemmMicroKernelAvx2>(a, b, c, ldc, m0, m1, n0, n1); break;
            case GemmKernel.Scalar: RunRegion<GemmMicroKernelScalar>(a, b, c, ldc, m0, m1, n0, n1); break;
            default: throw new InvalidOperationException($"unresolved GEMM kernel {kernel}");
        }
    }

    public static (int MR, int NR) TileOf(GemmKernel kernel) => kernel switch
    {
        GemmKernel.Avx512 => (GemmMicroKernelAvx512.MR, GemmMicroKernelAvx512.NR),
        GemmKernel.Avx2 => (GemmMicroKernelAvx2.MR, GemmMicroKernelAvx2.NR),
        _ => (GemmMicroKernelScalar.MR, GemmMicroKernelScalar.NR),
    };

    private static int RoundUp(int x, int m) => (x + m - 1) / m * m;
}

/// <summary>
/// Splits C over threads along M and N only (never K): a grid of tm x tn regions, each a whole number of
/// MR x NR tiles, chosen to minimise the largest region plus its packing traffic. Each task runs
/// <see cref="GemmDriver.RunRegion(GemmKernel, in GemmOperand, in GemmOperand, float*, nint, int, int, int, int)"/>.
/// </summary>
internal sealed unsafe class GemmBlockedJob : GemmJob
{
    private readonly GemmOperand _a, _b;
    private readonly float* _c;
    private readonly nint _ldc;
    private readonly GemmKernel _kernel;
    private readonly int _mr, _nr, _mTiles, _nTiles, _tm, _tn;

    public int Tasks => _tm * _tn;

    public GemmBlockedJob(in GemmOperand a, in GemmOperand b, float* c, nint ldc, GemmKernel kernel, int threads)
    {
        _a = a;
        _b = b;
        _c = c;
        _ldc = ldc;
        _kernel = kernel;
        (_mr, _nr) = GemmDriver.TileOf(kernel);
        int m = a.Rows, n = b.Cols, k = a.Cols;
        _mTiles = (m + _mr - 1) / _mr;
        _nTiles = (n + _nr - 1) / _nr;
        if ((long)m * n * k < GemmBlocking.ParallelThreshold) threads = 1;
        threads = (int)Math.Min(threads, (long)_mTiles * _nTiles);
        (_tm, _tn) = (1, 1);
        double best = double.MaxValue;
        for (int t = Math.Max(threads, 1); t >= 1 && best == double.MaxValue; t--)
            for (int tm = 1; tm <= t; tm++)
            {
                if (t % tm != 0) continue;
                int tn = t / tm;
                if (tm > _mTiles || tn > _nTiles) continue;
                double rows = Math.Ceiling((double)_mTiles / tm) * _mr, cols = Math.Ceiling((double)_nTiles / tn) * _nr;
                // Compute of the largest region, plus packing: every region packs its A rows and B columns (x K).
                double cost = rows * cols + 8 * (rows + cols);
                if (cost < best) (best, _tm, _tn) = (cost, tm, tn);
            }
    }

    public override void Execute(int task)
    {
        int ti = task / _tn, tj = task % _tn;
        int m0 = (int)((long)_mTiles * ti / _tm) * _mr, m1 = Math.Min(_a.Rows, (int)((long)_mTiles * (ti + 1) / _tm) * _mr);
        int n0 = (int)((long)_nTiles * tj / _tn) * _nr, n1 = Math.Min(_b.Cols, (int)((long)_nTiles * (tj + 1) / _tn) * _nr);
        GemmDriver.RunRegion(_kernel, _a, _b, _c, _ldc, m0, m1, n0, n1);
    }
}
