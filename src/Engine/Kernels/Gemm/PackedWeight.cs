using System.Runtime.InteropServices;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>How a <see cref="PackedWeight"/> lays out W.</summary>
internal enum PackedLayout
{
    /// <summary>float32 panels of NR columns (NR = the micro-kernel's), all of K: element (k, j) of panel p at p*K*NR + k*NR + j.</summary>
    F32Panels,
    /// <summary>
    /// bfloat16 kept as bf16, panels of 32 columns, k in pairs (vdpbf16ps's operand order): the dword of pair t and column j
    /// of panel p is at p*ceil(K/2)*32 + t*32 + j and holds (W[j][2t], W[j][2t+1]) in its low and high halves.
    /// </summary>
    Bf16Pairs,
}

/// <summary>
/// An nn.Linear weight W [N, K] (row-major, as HF stores it) packed once for C = X W^T: the micro-kernels' B panels over
/// the whole of K, so no call transposes or packs W again. Panels past N are zero-padded (padding only feeds lanes that
/// are never stored); odd K pads the last bf16 pair with 0. Which layout a call needs depends on the dtype and the
/// micro-kernel only (never on M or the batch-invariant mode: both modes read the same panels, each with its own fixed K
/// order, see <see cref="PackedGemm"/>). Native memory, 64-byte aligned, freed by the finalizer.
/// </summary>
internal sealed unsafe class PackedWeight
{
    public PackedLayout Layout { get; }
    public DType SourceDType { get; }
    public int N { get; }
    public int K { get; }
    /// <summary>Columns per panel.</summary>
    public int NR { get; }
    public int Panels { get; }
    /// <summary>Bytes from one panel to the next.</summary>
    public nint PanelBytes { get; }
    /// <summary>Bytes a panel advances per k (pairs: per 2 k, so offsets of even k only).</summary>
    public int BytesPerK => Layout == PackedLayout.F32Panels ? NR * 4 : 64;
    /// <summary>The F32Panels layout's micro-kernel (its NR).</summary>
    public GemmKernel Kernel { get; }
    public byte* Data { get; }
    public long Bytes { get; }

    private PackedWeight(PackedLayout layout, DType source, int n, int k, int nr, GemmKernel kernel)
    {
        Layout = layout;
        SourceDType = source;
        N = n;
        K = k;
        NR = nr;
        Kernel = kernel;
        Panels = (n + nr - 1) / nr;
        PanelBytes = layout == PackedLayout.F32Panels ? (nint)k * nr * 4 : (nint)((k + 1) / 2) * 128;
        Bytes = (long)Panels * PanelBytes;
        // Large weights on 2 MiB pages where the kernel allows it (THP "madvise"): the blocked path touches KC-rows of
        // many panels at once, the skinny path streams several panels; both would otherwise walk thousands of 4 KiB pages.
        bool huge = Bytes >= HugePage && OperatingSystem.IsLinux();
        nuint size = huge ? (nuint)((Bytes + HugePage - 1) / HugePage * HugePage) : (nuint)Math.Max(Bytes, 64);
        Data = (byte*)NativeMemory.AlignedAlloc(size, huge ? (nuint)HugePage : 64);
        if (huge) _ = IO.Libc.Madvise(Data, size, IO.Libc.MadvHugePage); // advice only: 4 KiB pages if refused
        GC.AddMemoryPressure(Math.Max(Bytes, 64));
    }

    private const int HugePage = 2 << 20;

    ~PackedWeight()
    {
        NativeMemory.AlignedFree(Data);
        GC.RemoveMemoryPressure(Math.Max(Bytes, 64));
    }

    /// <summary>The layout a weight of <paramref name="dtype"/> needs under <paramref name="kernel"/>: bf16 stays bf16 where AVX-512 runs (native or widened in registers), else float32 panels.</summary>
    public static (PackedLayout Layout, int NR) LayoutFor(DType dtype, GemmKernel kernel) =>
        dtype == DType.BFloat16 && kernel == GemmKernel.Avx512
            ? (PackedLayout.Bf16Pairs, Bf16DotKernel.NR)
            : (PackedLayout.F32Panels, GemmDriver.TileOf(kernel).NR);

    /// <summary>Packs W [N, K] (float32, bfloat16 or float16; any strides) for <paramref name="kernel"/>.</summary>
    public static PackedWeight Pack(Tensor weight, GemmKernel kernel) => Pack([weight], kernel);

    /// <summary>
    /// Packs W = cat(<paramref name="parts"/>, 0) [sum N_i, K] without making the concatenation: each column of the packed
    /// panels is read from its own part's row (a fused q/k/v or gate/up projection packs straight from the checkpoint's
    /// tensors, so no host copy of the fused weight exists beside the packed one). The same panels as packing the Cat.
    /// </summary>
    public static PackedWeight Pack(IReadOnlyList<Tensor> parts, GemmKernel kernel)
    {
        if (parts.Count == 0) throw new ArgumentException("a packed weight needs at least one part");
        foreach (var part in parts)
            if (part.Rank != 2) throw new ArgumentException($"a packed weight is [N, K], got shape {Shape.Format(part.Shape)}");
        var dtype = parts[0].DType;
        int k = parts[0].Shape[1], n = 0;
        foreach (var part in parts)
        {
            if (part.DType != dtype || part.Shape[1] != k)
                throw new ArgumentException($"the parts of a packed weight share dtype and K: {dtype.TorchName()} [*, {k}] and {part.DType.TorchName()} {Shape.Format(part.Shape)}");
            n += part.Shape[0];
        }
        var (layout, nr) = LayoutFor(dtype, kernel);
        var w = new PackedWeight(layout, dtype, n, k, nr, kernel);
        var handles = new System.Buffers.MemoryHandle[parts.Count];
        try
        {
            // column c of W (row c of the stack) starts at rows[c] and steps by colStrides[c] elements along K
            var rows = new nint[n];
            var colStrides = new nint[n];
            int c = 0, size = GemmOperand.ElementSize(dtype);
            for (int i = 0; i < parts.Count; i++)
            {
                var op = GemmOperand.Pin(MatrixView.Of(parts[i]), out handles[i]);
                for (int r = 0; r < op.Rows; r++, c++)
                {
                    rows[c] = (nint)(op.Origin + r * op.RowStride * size);
                    colStrides[c] = op.ColStride;
                }
            }
            if (layout == PackedLayout.F32Panels) w.PackF32(rows, colStrides);
            else w.PackPairs(rows, colStrides);
        }
        finally
        {
            foreach (var h in handles) h.Dispose();
        }
        return w;
    }

    private void PackF32(nint[] rows, nint[] colStrides)
    {
        int n = N, k = K, nr = NR;
        for (int p = 0; p < Panels; p++)
        {
            float* d = (float*)(Data + p * PanelBytes);
            for (int j = 0; j < nr; j++)
            {
                int col = p * nr + j;
                if (col >= n)
                {
                    for (int kk = 0; kk < k; kk++) d[(nint)kk * nr + j] = 0f;
                    continue;
                }
                byte* origin = (byte*)rows[col];
                nint idx = 0, cs = colStrides[col];
                switch (SourceDType)
                {
                    case DType.Float32: for (int kk = 0; kk < k; kk++, idx += cs) d[(nint)kk * nr + j] = GemmF32.Load(origin, idx); break;
                    case DType.BFloat16: for (int kk = 0; kk < k; kk++, idx += cs) d[(nint)kk * nr + j] = GemmBF16.Load(origin, idx); break;
                    default: for (int kk = 0; kk < k; kk++, idx += cs) d[(nint)kk * nr + j] = GemmF16.Load(origin, idx); break;
                }
            }
        }
    }

    private void PackPairs(nint[] rows, nint[] colStrides)
    {
        int n = N, k = K, pairs = (k + 1) / 2;
        for (int p = 0; p < Panels; p++)
        {
            ushort* d = (ushort*)(Data + p * PanelBytes);
            for (int j = 0; j < 32; j++)
            {
                int col = p * 32 + j;
                ushort* src = col < n ? (ushort*)rows[col] : null;
                nint cs = col < n ? colStrides[col] : 0;
                for (int t = 0; t < pairs; t++)
                {
                    ushort lo = 0, hi = 0;
                    if (src != null)
                    {
                        nint idx = 2 * t * cs;
                        lo = src[idx];
                        if (2 * t + 1 < k) hi = src[idx + cs];
                    }
                    d[((nint)t * 32 + j) * 2] = lo;
                    d[((nint)t * 32 + j) * 2 + 1] = hi;
                }
            }
        }
    }
}
