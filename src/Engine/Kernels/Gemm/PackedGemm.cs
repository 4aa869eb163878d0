using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>The path a packed-weight product takes (<see cref="PackedGemm.PathFor"/>: a function of the weight, M and the mode).</summary>
internal enum PackedPath
{
    None,
    /// <summary>M &lt;= 8: W streamed once, panel after panel, all of K per panel (decode).</summary>
    Skinny,
    /// <summary>M &gt; 8: the blocked loop nest over the packed panels (A packed per KC x MC block).</summary>
    Blocked,
}

/// <summary>
/// C = X W^T for a weight packed once at load (<see cref="PackedWeight"/>): X [M, K] (any strides, float32/bf16/fp16),
/// C float32 [M, N] with leading dimension ldc. The naive computation each path equals (per element (i, j)):
/// <list type="bullet">
/// <item>float32 panels (both modes) and bf16 pairs widened in registers (batch-invariant mode always; normal mode where the
/// native kernel is not selected, see <see cref="Bf16DotKernel.UseNative"/>):
/// <c>c = 0; for k = 0..K-1: c = fma(x[i][k], w[j][k], c)</c> in float32, bf16 widened exactly. The same single FMA chain
/// as <see cref="Gemm"/>'s blocked and GEMV-chain paths, so the bits equal <c>Gemm.Multiply(x, W^T)</c>'s in either mode
/// and do not depend on M, the row's position, the tile, the path (skinny or blocked) or the thread count.</item>
/// <item>bf16 pairs native (normal mode, X bf16, where <see cref="Bf16DotKernel.UseNative"/>): <c>c = 0; for t = 0..ceil(K/2)-1: c = dpbf16(c, x[i][2t..2t+1], w[j][2t..2t+1])</c>
/// (<see cref="Bf16DotKernel.ReferenceLane"/>). Also independent of M, position, tile and threads; a different order
/// than the float32 chain, so batch-invariant mode does not use it (its bits are pinned to the chain above).</item>
/// </list>
/// Paths: M &lt;= 8 streams W once (all of K per panel; threads split the panels): memory-bound decode. Larger M runs
/// the GotoBLAS nest with W's packing already done: NC panels x KC (ascending, continued through C) x MC rows, A packed
/// per block; threads split N panels (then M).
/// </summary>
internal static unsafe class PackedGemm
{
    public const int SkinnyMaxRows = 8;

    /// <summary>Whether a product of X (<paramref name="xDType"/>) with <paramref name="w"/> runs the native bf16 kernel in this mode.</summary>
    public static bool UsesNative(PackedWeight w, DType xDType, int m, bool invariant) =>
        w.Layout == PackedLayout.Bf16Pairs && xDType == DType.BFloat16 && !invariant && Bf16DotKernel.UseNative(m);

    /// <summary>The path a product of <paramref name="m"/> rows of X with <paramref name="w"/> takes, skinny or blocked (the
    /// one <see cref="Multiply"/> dispatches on; whether bf16 runs native is <see cref="UsesNative"/>; no call records
    /// which path it took).</summary>
    public static PackedPath PathFor(PackedWeight w, int m) =>
        m == 0 || w.N == 0 || w.K == 0 ? PackedPath.None : Skinny(w, m) ? PackedPath.Skinny : PackedPath.Blocked;

    private static bool Skinny(PackedWeight w, int m) => m <= SkinnyMaxRows && (w.Layout == PackedLayout.Bf16Pairs || w.Kernel == GemmKernel.Avx512);

    public static void Multiply(in GemmOperand x, PackedWeight w, float* c, nint ldc, bool invariant, int threads)
    {
        if (x.Cols != w.K)
            throw new ArgumentException($"mat1 and mat2 shapes cannot be multiplied ({x.Rows}x{x.Cols} and {w.K}x{w.N})");
        if (ldc < w.N) throw new ArgumentException($"ldc {ldc} is smaller than N {w.N}");
        int m = x.Rows;
        if (m == 0 || w.N == 0) return;
        if (w.K == 0)
        {
            for (int i = 0; i < m; i++) new Span<float>(c + i * ldc, w.N).Clear();
            return;
        }
        bool native = UsesNative(w, x.DType, m, invariant);
        bool skinny = Skinny(w, m);
        GemmJob job = (w.Layout, skinny, native) switch
        {
            (PackedLayout.Bf16Pairs, true, true) => new SkinnyJob<NativeSkinny>(x, w, c, ldc, threads),
            (PackedLayout.Bf16Pairs, true, false) => new SkinnyJob<WideSkinny>(x, w, c, ldc, threads),
            (PackedLayout.F32Panels, true, _) => new SkinnyJob<F32Skinny>(x, w, c, ldc, threads),
            (PackedLayout.Bf16Pairs, false, true) => new BlockedJob<NativeTile>(x, w, c, ldc, threads),
            (PackedLayout.Bf16Pairs, false, false) => new BlockedJob<WideTile>(x, w, c, ldc, threads),
            _ => w.Kernel switch
            {
                // 8-row tiles where they pad fewer rows than 14-row ones (M = 64: 64 rows instead of 70); same FMA chain.
                GemmKernel.Avx512 when (m + 7) / 8 * 8 < (m + 13) / 14 * 14 => new BlockedJob<F32Tile8>(x, w, c, ldc, threads),
                GemmKernel.Avx512 => new BlockedJob<F32Tile<GemmMicroKernelAvx512>>(x, w, c, ldc, threads),
                GemmKernel.Avx2 => new BlockedJob<F32Tile<GemmMicroKernelAvx2>>(x, w, c, ldc, threads),
                _ => new BlockedJob<F32Tile<GemmMicroKernelScalar>>(x, w, c, ldc, threads),
            },
        };
        var tasks = ((IPackedJob)job).Tasks;
        GemmThreadPool.Shared.Run(job, tasks);
    }

    private interface IPackedJob
    {
        int Tasks { get; }
    }

    // ---------------------------------------------------------------------------------------------
    // Blocked path (M > 8)
    // ---------------------------------------------------------------------------------------------

    /// <summary>A register tile over packed panels: MR rows of packed A times one NR-column panel.</summary>
    private interface IPackedTile
    {
        static abstract int MR { get; }
        static abstract int KC { get; }
        static abstract int MC { get; }
        /// <summary>Bytes of one packed A panel of MR rows and kc k.</summary>
        static abstract nint APanelBytes(int kc);
        /// <summary>Packs rows i0..i0+h-1 (h &lt;= MR, the rest zero) and k0..k0+kc-1 of X into one A panel.</summary>
        static abstract void PackA(in GemmOperand x, int i0, int h, int k0, int kc, byte* dst);
        static abstract void Run(int kc, byte* a, byte* b, float* c, nint ldc, bool accumulate);
    }

    private readonly struct F32Tile<TK> : IPackedTile where TK : struct, IGemmMicroKernel
    {
        public static int MR => TK.MR;
        public static int KC => TK.Blocking.KC;
        public static int MC => TK.Blocking.MC;
        public static nint APanelBytes(int kc) => (nint)kc * TK.MR * 4;
        public static void PackA(in GemmOperand x, int i0, int h, int k0, int kc, byte* dst) => GemmPacking.PackA(x, i0, h, k0, kc, TK.MR, (float*)dst);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Run(int kc, byte* a, byte* b, float* c, nint ldc, bool accumulate) => TK.Run(kc, (float*)a, (float*)b, c, ldc, accumulate);
    }

    /// <summary>float32 panels of 32 with the 8 x 32 AVX-512 tile (<see cref="PackedKernels.F32x8x32"/>).</summary>
    private readonly struct F32Tile8 : IPackedTile
    {
        public static int MR => 8;
        // KC 1024 (all of K for a 1024-wide model: one pass over C instead of six): fp32 prefill of 512 tokens on the
        // 155M bench Llama ran 377-386 ms against 403-460 with KC 192, 2048 tokens 1.90 s against 2.16 (2 threads, here).
        // The 32 KiB A micro-panel stays in L1, the 128 KiB B micro-panel streams from L2 (the kernel prefetches it).
        public static int KC => 1024;
        public static int MC => 128;
        public static nint APanelBytes(int kc) => (nint)kc * 8 * 4;
        public static void PackA(in GemmOperand x, int i0, int h, int k0, int kc, byte* dst) => GemmPacking.PackA(x, i0, h, k0, kc, 8, (float*)dst);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Run(int kc, byte* a, byte* b, float* c, nint ldc, bool accumulate) => PackedKernels.F32x8x32(kc, (float*)a, (float*)b, c, ldc, accumulate);
    }

    /// <summary>bf16 pairs widened in registers, float32 FMA chain; A packed as float32 (8 per k, kc rounded up to even with zeros).</summary>
    private readonly struct WideTile : IPackedTile
    {
        public static int MR => 8;
        // KC 1024 as F32Tile8 (bf16 prefill of 512 tokens: 425-470 ms against 463-497 with KC 256)
        public static int KC => 1024;
        public static int MC => 128;
        public static nint APanelBytes(int kc) => (nint)(kc + 1) / 2 * 2 * 8 * 4;
        public static void PackA(in GemmOperand x, int i0, int h, int k0, int kc, byte* dst)
        {
            GemmPacking.PackA(x, i0, h, k0, kc, 8, (float*)dst);
            if ((kc & 1) != 0) new Span<float>((float*)dst + (nint)kc * 8, 8).Clear();
        }
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Run(int kc, byte* a, byte* b, float* c, nint ldc, bool accumulate) =>
            PackedKernels.Bf16Wide8x32((kc + 1) / 2, (float*)a, (uint*)b, c, ldc, accumulate);
    }

    /// <summary>vdpbf16ps, 14 x 32; A packed as bf16 pairs (14 dwords per pair).</summary>
    private readonly struct NativeTile : IPackedTile
    {
        private static readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<nint, void*, void*, float*, nint, nint, void> _kernel =
            Bf16DotKernel.IsSupported ? Bf16DotKernel.Get(Bf16DotKernel.MR, 1) : null;
        public static int MR => Bf16DotKernel.MR;
        public static int KC => 384;
        public static int MC => 112;
        public static nint APanelBytes(int kc) => (nint)(kc + 1) / 2 * Bf16DotKernel.MR * 4;
        public static void PackA(in GemmOperand x, int i0, int h, int k0, int kc, byte* dst) => PackPairsA(x, i0, h, k0, kc, Bf16DotKernel.MR, (uint*)dst);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Run(int kc, byte* a, byte* b, float* c, nint ldc, bool accumulate) =>
            _kernel((kc + 1) / 2, a, b, c, ldc * 4, accumulate ? 1 : 0);
    }

    /// <summary>Rows i0..i0+h-1 of bf16 X, k0..k0+kc-1, as pairs: dword t*mr + r = (x[r][k0+2t], x[r][k0+2t+1]); rows past h and k past kc are 0.</summary>
    internal static void PackPairsA(in GemmOperand x, int i0, int h, int k0, int kc, int mr, uint* dst)
    {
        int pairs = (kc + 1) / 2;
        ushort* src = (ushort*)x.Origin;
        nint cs = x.ColStride;
        for (int r = 0; r < mr; r++)
        {
            if (r >= h)
            {
                for (int t = 0; t < pairs; t++) dst[(nint)t * mr + r] = 0;
                continue;
            }
            nint idx = (i0 + r) * x.RowStride + k0 * cs;
            if (cs == 1 && (kc & 1) == 0 && ((nint)(src + idx) & 3) == 0)
            {
                uint* s = (uint*)(src + idx);
                for (int t = 0; t < pairs; t++) dst[(nint)t * mr + r] = s[t];
                continue;
            }
            for (int t = 0; t < pairs; t++, idx += 2 * cs)
            {
                uint lo = src[idx], hi = 2 * t + 1 < kc ? src[idx + cs] : 0u;
                dst[(nint)t * mr + r] = lo | hi << 16;
            }
        }
    }

    private sealed class BlockedJob<T> : GemmJob, IPackedJob where T : struct, IPackedTile
    {
        private readonly GemmOperand _x;
        private readonly PackedWeight _w;
        private readonly float* _c;
        private readonly nint _ldc;
        private readonly int _tm, _tn, _mTiles;

        public int Tasks => _tm * _tn;

        public BlockedJob(in GemmOperand x, PackedWeight w, float* c, nint ldc, int threads)
        {
            _x = x;
            _w = w;
            _c = c;
            _ldc = ldc;
            _mTiles = (x.Rows + T.MR - 1) / T.MR;
            if ((long)x.Rows * w.N * w.K < GemmBlocking.ParallelThreshold) threads = 1;
            // W is already packed: splitting N lets each thread read only its panels (A, small, is packed by both).
            _tn = Math.Max(1, Math.Min(threads, w.Panels));
            _tm = Math.Max(1, Math.Min(threads / _tn, _mTiles));
        }

        public override void Execute(int task)
        {
            int ti = task / _tn, tj = task % _tn;
            int m0 = (int)((long)_mTiles * ti / _tm) * T.MR, m1 = Math.Min(_x.Rows, (int)((long)_mTiles * (ti + 1) / _tm) * T.MR);
            int p0 = (int)((long)_w.Panels * tj / _tn), p1 = (int)((long)_w.Panels * (tj + 1) / _tn);
            RunRegion(m0, m1, p0, p1);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void RunRegion(int m0, int m1, int p0, int p1)
        {
            if (m1 <= m0 || p1 <= p0) return;
            var w = _w;
            int k = w.K, n = w.N, nr = w.NR, mr = T.MR;
            int kcMax = Math.Min(T.KC, k), mcMax = Math.Min(T.MC, (m1 - m0 + mr - 1) / mr * mr);
            var scratch = GemmScratch.Current;
            byte* bufA = (byte*)scratch.A((mcMax / mr + 1) * T.APanelBytes(kcMax) / 4 + 16);
            float* tile = scratch.Tile;
            const int ncPanels = 64;   // 2048 columns of 32: one KC step's B block (1.5 MiB fp32) and C block stay near L2
            for (int jc = p0; jc < p1; jc += ncPanels)
            {
                int jEnd = Math.Min(p1, jc + ncPanels);
                for (int pc = 0; pc < k; pc += T.KC)
                {
                    int kc = Math.Min(T.KC, k - pc);
                    bool accumulate = pc > 0;
                    nint aBytes = T.APanelBytes(kc);
                    for (int ic = m0; ic < m1; ic += T.MC)
                    {
                        int mc = Math.Min(T.MC, m1 - ic);
                        for (int ir = 0; ir < mc; ir += mr) T.PackA(_x, ic + ir, Math.Min(mr, mc - ir), pc, kc, bufA + ir / mr * aBytes);
                        for (int p = jc; p < jEnd; p++)
                        {
                            byte* bp = w.Data + p * w.PanelBytes + (nint)pc * w.BytesPerK;
                            int wd = Math.Min(nr, n - p * nr);
                            float* cCol = _c + p * nr;
                            for (int ir = 0; ir < mc; ir += mr)
                            {
                                int h = Math.Min(mr, mc - ir);
                                byte* ap = bufA + ir / mr * aBytes;
                                float* cp = cCol + (ic + ir) * _ldc;
                                if (h == mr && wd == nr)
                                {
                                    T.Run(kc, ap, bp, cp, _ldc, accumulate);
                                }
                                else
                                {
                                    if (accumulate)
                                        for (int i = 0; i < h; i++)
                                            for (int j = 0; j < wd; j++) tile[i * nr + j] = cp[i * _ldc + j];
                                    T.Run(kc, ap, bp, tile, nr, accumulate);
                                    for (int i = 0; i < h; i++)
                                        for (int j = 0; j < wd; j++) cp[i * _ldc + j] = tile[i * nr + j];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Skinny path (M <= 8): W streamed once
    // ---------------------------------------------------------------------------------------------

    /// <summary>A skinny kernel: all M rows (packed once) times a group of panels over all of K.</summary>
    private interface ISkinny
    {
        /// <summary>Panels per kernel call for M rows.</summary>
        static abstract int Group(int m);
        static abstract nint ABytes(int m, int k);
        static abstract void PackA(in GemmOperand x, byte* dst);
        /// <summary>C[M x group*NR] (ldc) = rows of A times panels p..p+group-1 (consecutive, all of K).</summary>
        static abstract void Run(int m, int k, int group, byte* a, byte* b, nint panelBytes, float* c, nint ldc);
    }

    /// <summary>Rows of the C# skinny kernel for M rows (the rest zero): 1 (x 4 panels), 4 (x 2 panels) or 8 (x 1 panel).</summary>
    private static int SkinnyRows(int m) => m == 1 ? 1 : m <= 4 ? 4 : 8;

    private static int SkinnyGroup(int m) => m == 1 ? 4 : m <= 4 ? 2 : 1;

    private readonly struct F32Skinny : ISkinny
    {
        public static int Group(int m) => SkinnyGroup(m);
        public static nint ABytes(int m, int k) => (nint)k * SkinnyRows(m) * 4;
        public static void PackA(in GemmOperand x, byte* dst) => GemmPacking.PackA(x, 0, x.Rows, 0, x.Cols, SkinnyRows(x.Rows), (float*)dst);
        public static void Run(int m, int k, int group, byte* a, byte* b, nint panelBytes, float* c, nint ldc)
        {
            if (group == 4) PackedKernels.F32x1x128(k, (float*)a, (float*)b, panelBytes / 4, c);
            else if (group == 2) PackedKernels.F32x4x64(k, (float*)a, (float*)b, panelBytes / 4, c, ldc);
            else if (SkinnyRows(m) == 8) PackedKernels.F32x8x32(k, (float*)a, (float*)b, c, ldc, false);
            else SinglePanel(SkinnyRows(m), k, (float*)a, (float*)b, c, ldc);
        }
    }

    /// <summary>The tail panel of the 1- and 4-row kernels: the same FMA chain, one panel.</summary>
    private static void SinglePanel(int rows, int k, float* a, float* b, float* c, nint ldc)
    {
        for (int r = 0; r < rows; r++)
        {
            var s0 = Vector512<float>.Zero; var s1 = s0;
            for (nint p = 0; p < k; p++)
            {
                var x = Vector512.Create(a[p * rows + r]);
                s0 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b + p * 32), s0);
                s1 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b + p * 32 + 16), s1);
            }
            s0.Store(c + r * ldc); s1.Store(c + r * ldc + 16);
        }
    }

    private readonly struct WideSkinny : ISkinny
    {
        public static int Group(int m) => SkinnyGroup(m);
        public static nint ABytes(int m, int k) => (nint)(k + 1) / 2 * 2 * SkinnyRows(m) * 4;
        public static void PackA(in GemmOperand x, byte* dst)
        {
            int rows = SkinnyRows(x.Rows), k = x.Cols;
            GemmPacking.PackA(x, 0, x.Rows, 0, k, rows, (float*)dst);
            if ((k & 1) != 0) new Span<float>((float*)dst + (nint)k * rows, rows).Clear();
        }
        public static void Run(int m, int k, int group, byte* a, byte* b, nint panelBytes, float* c, nint ldc)
        {
            int pairs = (k + 1) / 2;
            if (group == 4) PackedKernels.Bf16Wide1x128(pairs, (float*)a, (uint*)b, panelBytes / 4, c);
            else if (group == 2) PackedKernels.Bf16Wide4x64(pairs, (float*)a, (uint*)b, panelBytes / 4, c, ldc);
            else if (SkinnyRows(m) == 8) PackedKernels.Bf16Wide8x32(pairs, (float*)a, (uint*)b, c, ldc, false);
            else WideSinglePanel(SkinnyRows(m), pairs, (float*)a, (uint*)b, c, ldc);
        }
    }

    private static void WideSinglePanel(int rows, int pairs, float* a, uint* b, float* c, nint ldc)
    {
        var high = Vector512.Create(0xFFFF0000u);
        for (int r = 0; r < rows; r++)
        {
            var s0 = Vector512<float>.Zero; var s1 = s0;
            for (nint t = 0; t < pairs; t++)
            {
                var u0 = Vector512.Load(b + t * 32); var u1 = Vector512.Load(b + t * 32 + 16);
                var x = Vector512.Create(a[2 * t * rows + r]);
                s0 = Avx512F.FusedMultiplyAdd(x, (u0 << 16).AsSingle(), s0); s1 = Avx512F.FusedMultiplyAdd(x, (u1 << 16).AsSingle(), s1);
                x = Vector512.Create(a[(2 * t + 1) * rows + r]);
                s0 = Avx512F.FusedMultiplyAdd(x, (u0 & high).AsSingle(), s0); s1 = Avx512F.FusedMultiplyAdd(x, (u1 & high).AsSingle(), s1);
            }
            s0.Store(c + r * ldc); s1.Store(c + r * ldc + 16);
        }
    }

    private readonly struct NativeSkinny : ISkinny
    {
        public static int Group(int m) => Bf16DotKernel.PanelsFor(m);
        public static nint ABytes(int m, int k) => (nint)(k + 1) / 2 * m * 4;
        public static void PackA(in GemmOperand x, byte* dst) => PackPairsA(x, 0, x.Rows, 0, x.Cols, x.Rows, (uint*)dst);
        public static void Run(int m, int k, int group, byte* a, byte* b, nint panelBytes, float* c, nint ldc) =>
            Bf16DotKernel.Get(m, group)((k + 1) / 2, a, b, c, ldc * 4, 0);
    }

    private sealed class SkinnyJob<T> : GemmJob, IPackedJob where T : struct, ISkinny
    {
        private readonly GemmOperand _x;
        private readonly PackedWeight _w;
        private readonly float* _c;
        private readonly nint _ldc;

        public int Tasks { get; }

        public SkinnyJob(in GemmOperand x, PackedWeight w, float* c, nint ldc, int threads)
        {
            _x = x;
            _w = w;
            _c = c;
            _ldc = ldc;
            // Each task streams its own panels; below ~1 MiB of weight one thread is faster than the wake-up.
            Tasks = w.Bytes < (1 << 20) ? 1 : Math.Max(1, Math.Min(threads, w.Panels / 4));
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int task)
        {
            var w = _w;
            int m = _x.Rows, k = w.K, nr = w.NR;
            int p0 = (int)((long)w.Panels * task / Tasks), p1 = (int)((long)w.Panels * (task + 1) / Tasks);
            var scratch = GemmScratch.Current;
            byte* a = (byte*)scratch.A(T.ABytes(m, k) / 4 + 16);
            T.PackA(_x, a);
            float* tile = scratch.Tile;
            int group = T.Group(m);
            for (int p = p0; p < p1;)
            {
                int g = Math.Min(group, p1 - p);
                if (g < group) g = 1;   // the tail runs panel by panel (kernels exist for the group size and for 1)
                byte* bp = w.Data + p * w.PanelBytes;
                int cols = Math.Min(g * nr, w.N - p * nr);
                // The C# kernels compute SkinnyRows(M) rows: write to the tile unless that is M and the panels are whole.
                bool direct = cols == g * nr && (m == SkinnyRows(m) || typeof(T) == typeof(NativeSkinny));
                if (direct)
                {
                    T.Run(m, k, g, a, bp, w.PanelBytes, _c + p * nr, _ldc);
                }
                else
                {
                    T.Run(m, k, g, a, bp, w.PanelBytes, tile, g * nr);
                    for (int i = 0; i < m; i++)
                        new ReadOnlySpan<float>(tile + i * g * nr, cols).CopyTo(new Span<float>(_c + i * _ldc + p * nr, cols));
                }
                p += g;
            }
        }
    }
}

/// <summary>
/// The C# micro-kernels of the packed path (AVX-512F). Contract as <see cref="IGemmMicroKernel"/>: C[8 x 32] (ldc) = or
/// += packed A (8 floats per k) times one packed B panel; every element one FMA chain over k ascending; lanes never mix.
/// </summary>
internal static unsafe class PackedKernels
{
    /// <summary>
    /// Software prefetch distance of the one-panel kernels, in 4-byte elements (2 KiB): a single sequential stream per core
    /// is latency-bound from memory (decode with M = 5..8 read W at 12.6 GB/s cold without it, 19.9 with it, 7B bf16 shape).
    /// </summary>
    private const int PrefetchAhead = 512;

    /// <summary>float32 panel (32 floats per k).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void F32x8x32(int kc, float* a, float* b, float* c, nint ldc, bool accumulate)
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
        if (accumulate)
        {
            c00 = Vector512.Load(c); c01 = Vector512.Load(c + 16); c10 = Vector512.Load(c + ldc); c11 = Vector512.Load(c + ldc + 16);
            c20 = Vector512.Load(c + 2 * ldc); c21 = Vector512.Load(c + 2 * ldc + 16); c30 = Vector512.Load(c + 3 * ldc); c31 = Vector512.Load(c + 3 * ldc + 16);
            c40 = Vector512.Load(c + 4 * ldc); c41 = Vector512.Load(c + 4 * ldc + 16); c50 = Vector512.Load(c + 5 * ldc); c51 = Vector512.Load(c + 5 * ldc + 16);
            c60 = Vector512.Load(c + 6 * ldc); c61 = Vector512.Load(c + 6 * ldc + 16); c70 = Vector512.Load(c + 7 * ldc); c71 = Vector512.Load(c + 7 * ldc + 16);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = Vector512<float>.Zero;
        }
        for (int k = 0; k < kc; k++, a += 8, b += 32)
        {
            Sse.Prefetch0(b + PrefetchAhead); Sse.Prefetch0(b + PrefetchAhead + 16);
            var b0 = Vector512.Load(b); var b1 = Vector512.Load(b + 16);
            var x = Vector512.Create(a[0]); c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[1]); c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[2]); c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[3]); c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[4]); c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[5]); c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[6]); c60 = Avx512F.FusedMultiplyAdd(x, b0, c60); c61 = Avx512F.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[7]); c70 = Avx512F.FusedMultiplyAdd(x, b0, c70); c71 = Avx512F.FusedMultiplyAdd(x, b1, c71);
        }
        Store8x32(c, ldc, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71);
    }

    /// <summary>bf16 pairs panel (32 dwords per pair: W[j][2t] low, W[j][2t+1] high), widened exactly in registers; A has 8 floats per k for 2*pairs k.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Bf16Wide8x32(int pairs, float* a, uint* b, float* c, nint ldc, bool accumulate)
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
        if (accumulate)
        {
            c00 = Vector512.Load(c); c01 = Vector512.Load(c + 16); c10 = Vector512.Load(c + ldc); c11 = Vector512.Load(c + ldc + 16);
            c20 = Vector512.Load(c + 2 * ldc); c21 = Vector512.Load(c + 2 * ldc + 16); c30 = Vector512.Load(c + 3 * ldc); c31 = Vector512.Load(c + 3 * ldc + 16);
            c40 = Vector512.Load(c + 4 * ldc); c41 = Vector512.Load(c + 4 * ldc + 16); c50 = Vector512.Load(c + 5 * ldc); c51 = Vector512.Load(c + 5 * ldc + 16);
            c60 = Vector512.Load(c + 6 * ldc); c61 = Vector512.Load(c + 6 * ldc + 16); c70 = Vector512.Load(c + 7 * ldc); c71 = Vector512.Load(c + 7 * ldc + 16);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = Vector512<float>.Zero;
        }
        var high = Vector512.Create(0xFFFF0000u);
        for (int t = 0; t < pairs; t++, a += 16, b += 32)
        {
            Sse.Prefetch0(b + PrefetchAhead); Sse.Prefetch0(b + PrefetchAhead + 16);
            var v0 = Vector512.Load(b); var v1 = Vector512.Load(b + 16);
            // k = 2t: the low halves, moved up to be float32 (exact).
            var b0 = Vector512.ShiftLeft(v0, 16).AsSingle(); var b1 = Vector512.ShiftLeft(v1, 16).AsSingle();
            var x = Vector512.Create(a[0]); c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[1]); c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[2]); c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[3]); c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[4]); c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[5]); c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[6]); c60 = Avx512F.FusedMultiplyAdd(x, b0, c60); c61 = Avx512F.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[7]); c70 = Avx512F.FusedMultiplyAdd(x, b0, c70); c71 = Avx512F.FusedMultiplyAdd(x, b1, c71);
            // k = 2t + 1: the high halves, masked.
            b0 = (v0 & high).AsSingle(); b1 = (v1 & high).AsSingle();
            x = Vector512.Create(a[8]); c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[9]); c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[10]); c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[11]); c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[12]); c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[13]); c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[14]); c60 = Avx512F.FusedMultiplyAdd(x, b0, c60); c61 = Avx512F.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[15]); c70 = Avx512F.FusedMultiplyAdd(x, b0, c70); c71 = Avx512F.FusedMultiplyAdd(x, b1, c71);
        }
        Store8x32(c, ldc, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71);
    }

    /// <summary>One row (a: 1 float per k) times 4 consecutive float32 panels (b + q*stride): C[1 x 128], from zero.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void F32x1x128(int kc, float* a, float* b, nint stride, float* c)
    {
        var s0 = Vector512<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0; var s4 = s0; var s5 = s0; var s6 = s0; var s7 = s0;
        float* b1 = b + stride, b2 = b + 2 * stride, b3 = b + 3 * stride;
        for (nint k = 0; k < kc; k++)
        {
            var x = Vector512.Create(a[k]);
            nint o = k * 32;
            s0 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b + o), s0); s1 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b + o + 16), s1);
            s2 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b1 + o), s2); s3 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b1 + o + 16), s3);
            s4 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b2 + o), s4); s5 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b2 + o + 16), s5);
            s6 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b3 + o), s6); s7 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(b3 + o + 16), s7);
        }
        s0.Store(c); s1.Store(c + 16); s2.Store(c + 32); s3.Store(c + 48); s4.Store(c + 64); s5.Store(c + 80); s6.Store(c + 96); s7.Store(c + 112);
    }

    /// <summary>Four rows (a: 4 floats per k) times 2 consecutive float32 panels: C[4 x 64] (ldc), from zero.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void F32x4x64(int kc, float* a, float* b, nint stride, float* c, nint ldc)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
        float* b1 = b + stride;
        for (nint k = 0; k < kc; k++, a += 4)
        {
            nint o = k * 32;
            Sse.Prefetch0(b + o + PrefetchAhead); Sse.Prefetch0(b + o + PrefetchAhead + 16);
            Sse.Prefetch0(b1 + o + PrefetchAhead); Sse.Prefetch0(b1 + o + PrefetchAhead + 16);
            var v0 = Vector512.Load(b + o); var v1 = Vector512.Load(b + o + 16); var v2 = Vector512.Load(b1 + o); var v3 = Vector512.Load(b1 + o + 16);
            var x = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(x, v0, c00); c01 = Avx512F.FusedMultiplyAdd(x, v1, c01); c02 = Avx512F.FusedMultiplyAdd(x, v2, c02); c03 = Avx512F.FusedMultiplyAdd(x, v3, c03);
            x = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(x, v0, c10); c11 = Avx512F.FusedMultiplyAdd(x, v1, c11); c12 = Avx512F.FusedMultiplyAdd(x, v2, c12); c13 = Avx512F.FusedMultiplyAdd(x, v3, c13);
            x = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(x, v0, c20); c21 = Avx512F.FusedMultiplyAdd(x, v1, c21); c22 = Avx512F.FusedMultiplyAdd(x, v2, c22); c23 = Avx512F.FusedMultiplyAdd(x, v3, c23);
            x = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(x, v0, c30); c31 = Avx512F.FusedMultiplyAdd(x, v1, c31); c32 = Avx512F.FusedMultiplyAdd(x, v2, c32); c33 = Avx512F.FusedMultiplyAdd(x, v3, c33);
        }
        c00.Store(c); c01.Store(c + 16); c02.Store(c + 32); c03.Store(c + 48); c += ldc;
        c10.Store(c); c11.Store(c + 16); c12.Store(c + 32); c13.Store(c + 48); c += ldc;
        c20.Store(c); c21.Store(c + 16); c22.Store(c + 32); c23.Store(c + 48); c += ldc;
        c30.Store(c); c31.Store(c + 16); c32.Store(c + 32); c33.Store(c + 48);
    }

    /// <summary>One row (a: 1 float per k, 2*pairs k) times 4 consecutive bf16 pair panels (b + q*stride dwords), widened: C[1 x 128], from zero.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Bf16Wide1x128(int pairs, float* a, uint* b, nint stride, float* c)
    {
        var s0 = Vector512<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0; var s4 = s0; var s5 = s0; var s6 = s0; var s7 = s0;
        var high = Vector512.Create(0xFFFF0000u);
        uint* b1 = b + stride, b2 = b + 2 * stride, b3 = b + 3 * stride;
        for (nint t = 0; t < pairs; t++)
        {
            nint o = t * 32;
            var v0 = Vector512.Load(b + o); var v1 = Vector512.Load(b + o + 16); var v2 = Vector512.Load(b1 + o); var v3 = Vector512.Load(b1 + o + 16);
            var v4 = Vector512.Load(b2 + o); var v5 = Vector512.Load(b2 + o + 16); var v6 = Vector512.Load(b3 + o); var v7 = Vector512.Load(b3 + o + 16);
            var x = Vector512.Create(a[2 * t]);
            s0 = Avx512F.FusedMultiplyAdd(x, (v0 << 16).AsSingle(), s0); s1 = Avx512F.FusedMultiplyAdd(x, (v1 << 16).AsSingle(), s1);
            s2 = Avx512F.FusedMultiplyAdd(x, (v2 << 16).AsSingle(), s2); s3 = Avx512F.FusedMultiplyAdd(x, (v3 << 16).AsSingle(), s3);
            s4 = Avx512F.FusedMultiplyAdd(x, (v4 << 16).AsSingle(), s4); s5 = Avx512F.FusedMultiplyAdd(x, (v5 << 16).AsSingle(), s5);
            s6 = Avx512F.FusedMultiplyAdd(x, (v6 << 16).AsSingle(), s6); s7 = Avx512F.FusedMultiplyAdd(x, (v7 << 16).AsSingle(), s7);
            x = Vector512.Create(a[2 * t + 1]);
            s0 = Avx512F.FusedMultiplyAdd(x, (v0 & high).AsSingle(), s0); s1 = Avx512F.FusedMultiplyAdd(x, (v1 & high).AsSingle(), s1);
            s2 = Avx512F.FusedMultiplyAdd(x, (v2 & high).AsSingle(), s2); s3 = Avx512F.FusedMultiplyAdd(x, (v3 & high).AsSingle(), s3);
            s4 = Avx512F.FusedMultiplyAdd(x, (v4 & high).AsSingle(), s4); s5 = Avx512F.FusedMultiplyAdd(x, (v5 & high).AsSingle(), s5);
            s6 = Avx512F.FusedMultiplyAdd(x, (v6 & high).AsSingle(), s6); s7 = Avx512F.FusedMultiplyAdd(x, (v7 & high).AsSingle(), s7);
        }
        s0.Store(c); s1.Store(c + 16); s2.Store(c + 32); s3.Store(c + 48); s4.Store(c + 64); s5.Store(c + 80); s6.Store(c + 96); s7.Store(c + 112);
    }

    /// <summary>Four rows (a: 4 floats per k) times 2 consecutive bf16 pair panels, widened: C[4 x 64] (ldc), from zero.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Bf16Wide4x64(int pairs, float* a, uint* b, nint stride, float* c, nint ldc)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
        var high = Vector512.Create(0xFFFF0000u);
        uint* b1 = b + stride;
        for (nint t = 0; t < pairs; t++, a += 8)
        {
            nint o = t * 32;
            Sse.Prefetch0(b + o + PrefetchAhead); Sse.Prefetch0(b + o + PrefetchAhead + 16);
            Sse.Prefetch0(b1 + o + PrefetchAhead); Sse.Prefetch0(b1 + o + PrefetchAhead + 16);
            var u0 = Vector512.Load(b + o); var u1 = Vector512.Load(b + o + 16); var u2 = Vector512.Load(b1 + o); var u3 = Vector512.Load(b1 + o + 16);
            var v0 = (u0 << 16).AsSingle(); var v1 = (u1 << 16).AsSingle(); var v2 = (u2 << 16).AsSingle(); var v3 = (u3 << 16).AsSingle();
            var x = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(x, v0, c00); c01 = Avx512F.FusedMultiplyAdd(x, v1, c01); c02 = Avx512F.FusedMultiplyAdd(x, v2, c02); c03 = Avx512F.FusedMultiplyAdd(x, v3, c03);
            x = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(x, v0, c10); c11 = Avx512F.FusedMultiplyAdd(x, v1, c11); c12 = Avx512F.FusedMultiplyAdd(x, v2, c12); c13 = Avx512F.FusedMultiplyAdd(x, v3, c13);
            x = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(x, v0, c20); c21 = Avx512F.FusedMultiplyAdd(x, v1, c21); c22 = Avx512F.FusedMultiplyAdd(x, v2, c22); c23 = Avx512F.FusedMultiplyAdd(x, v3, c23);
            x = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(x, v0, c30); c31 = Avx512F.FusedMultiplyAdd(x, v1, c31); c32 = Avx512F.FusedMultiplyAdd(x, v2, c32); c33 = Avx512F.FusedMultiplyAdd(x, v3, c33);
            v0 = (u0 & high).AsSingle(); v1 = (u1 & high).AsSingle(); v2 = (u2 & high).AsSingle(); v3 = (u3 & high).AsSingle();
            x = Vector512.Create(a[4]);
            c00 = Avx512F.FusedMultiplyAdd(x, v0, c00); c01 = Avx512F.FusedMultiplyAdd(x, v1, c01); c02 = Avx512F.FusedMultiplyAdd(x, v2, c02); c03 = Avx512F.FusedMultiplyAdd(x, v3, c03);
            x = Vector512.Create(a[5]);
            c10 = Avx512F.FusedMultiplyAdd(x, v0, c10); c11 = Avx512F.FusedMultiplyAdd(x, v1, c11); c12 = Avx512F.FusedMultiplyAdd(x, v2, c12); c13 = Avx512F.FusedMultiplyAdd(x, v3, c13);
            x = Vector512.Create(a[6]);
            c20 = Avx512F.FusedMultiplyAdd(x, v0, c20); c21 = Avx512F.FusedMultiplyAdd(x, v1, c21); c22 = Avx512F.FusedMultiplyAdd(x, v2, c22); c23 = Avx512F.FusedMultiplyAdd(x, v3, c23);
            x = Vector512.Create(a[7]);
            c30 = Avx512F.FusedMultiplyAdd(x, v0, c30); c31 = Avx512F.FusedMultiplyAdd(x, v1, c31); c32 = Avx512F.FusedMultiplyAdd(x, v2, c32); c33 = Avx512F.FusedMultiplyAdd(x, v3, c33);
        }
        c00.Store(c); c01.Store(c + 16); c02.Store(c + 32); c03.Store(c + 48); c += ldc;
        c10.Store(c); c11.Store(c + 16); c12.Store(c + 32); c13.Store(c + 48); c += ldc;
        c20.Store(c); c21.Store(c + 16); c22.Store(c + 32); c23.Store(c + 48); c += ldc;
        c30.Store(c); c31.Store(c + 16); c32.Store(c + 32); c33.Store(c + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store8x32(float* c, nint ldc,
        Vector512<float> c00, Vector512<float> c01, Vector512<float> c10, Vector512<float> c11, Vector512<float> c20, Vector512<float> c21,
        Vector512<float> c30, Vector512<float> c31, Vector512<float> c40, Vector512<float> c41, Vector512<float> c50, Vector512<float> c51,
        Vector512<float> c60, Vector512<float> c61, Vector512<float> c70, Vector512<float> c71)
    {
        c00.Store(c); c01.Store(c + 16); c10.Store(c + ldc); c11.Store(c + ldc + 16);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 16); c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 16);
        c40.Store(c + 4 * ldc); c41.Store(c + 4 * ldc + 16); c50.Store(c + 5 * ldc); c51.Store(c + 5 * ldc + 16);
        c60.Store(c + 6 * ldc); c61.Store(c + 6 * ldc + 16); c70.Store(c + 7 * ldc); c71.Store(c + 7 * ldc + 16);
    }
}
