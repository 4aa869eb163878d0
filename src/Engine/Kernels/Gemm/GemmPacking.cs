using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// Packing of operand blocks into the micro-kernel's layouts, from any strides (transposed and stride-0 broadcast
/// views included), widening bf16/fp16 to float32 exactly. Edge panels are padded with zeros so edge tiles run the
/// same micro-kernel (padding only feeds lanes that are never stored).
/// <list type="bullet">
/// <item>B block [kc x nc] becomes ceil(nc/NR) panels of kc x NR: panel p, element (k, j) at p*kc*NR + k*NR + j.</item>
/// <item>A block [mc x kc] becomes ceil(mc/MR) panels of MR x kc: panel p, element (i, k) at p*kc*MR + k*MR + i.</item>
/// </list>
/// </summary>
internal static unsafe class GemmPacking
{
    public static void PackB(in GemmOperand b, int k0, int kc, int j0, int nc, int nr, float* dst)
    {
        switch (b.DType)
        {
            case DType.Float32: PackB<GemmF32>(b, k0, kc, j0, nc, nr, dst); break;
            case DType.BFloat16: PackB<GemmBF16>(b, k0, kc, j0, nc, nr, dst); break;
            default: PackB<GemmF16>(b, k0, kc, j0, nc, nr, dst); break;
        }
    }

    public static void PackA(in GemmOperand a, int i0, int mc, int k0, int kc, int mr, float* dst)
    {
        switch (a.DType)
        {
            case DType.Float32: PackA<GemmF32>(a, i0, mc, k0, kc, mr, dst); break;
            case DType.BFloat16: PackA<GemmBF16>(a, i0, mc, k0, kc, mr, dst); break;
            default: PackA<GemmF16>(a, i0, mc, k0, kc, mr, dst); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB<T>(in GemmOperand b, int k0, int kc, int j0, int nc, int nr, float* dst) where T : struct, IGemmElement
    {
        nint rs = b.RowStride, cs = b.ColStride;
        byte* origin = b.Origin;
        for (int p = 0; p < nc; p += nr)
        {
            int w = Math.Min(nr, nc - p);
            float* d = dst + (nint)p * kc;
            nint first = k0 * rs + (j0 + p) * cs;
            if (typeof(T) == typeof(GemmF32) && cs == 1 && w == nr)
            {
                // Row-major B: each k row of the panel is nr contiguous floats (nr is a multiple of 8).
                float* s = (float*)origin + first;
                for (int k = 0; k < kc; k++, s += rs, d += nr)
                    for (int j = 0; j < nr; j += 8)
                        Vector256.Store(Vector256.Load(s + j), d + j);
            }
            else if (Math.Abs(rs) < Math.Abs(cs))
            {
                // k is the fast direction in memory (e.g. B = W^T of a [N, K] weight): walk each column along k.
                for (int j = 0; j < w; j++)
                {
                    nint idx = first + j * cs;
                    for (int k = 0; k < kc; k++, idx += rs) d[k * nr + j] = T.Load(origin, idx);
                }
                for (int j = w; j < nr; j++)
                    for (int k = 0; k < kc; k++) d[k * nr + j] = 0f;
            }
            else
            {
                for (int k = 0; k < kc; k++, d += nr)
                {
                    nint idx = first + k * rs;
                    int j = 0;
                    for (; j < w; j++, idx += cs) d[j] = T.Load(origin, idx);
                    for (; j < nr; j++) d[j] = 0f;
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA<T>(in GemmOperand a, int i0, int mc, int k0, int kc, int mr, float* dst) where T : struct, IGemmElement
    {
        nint rs = a.RowStride, cs = a.ColStride;
        byte* origin = a.Origin;
        for (int p = 0; p < mc; p += mr)
        {
            int h = Math.Min(mr, mc - p);
            float* d = dst + (nint)p * kc;
            nint first = (i0 + p) * rs + k0 * cs;
            if (Math.Abs(cs) <= Math.Abs(rs))
            {
                // Row-major A (the usual case): walk each row along k.
                for (int i = 0; i < h; i++)
                {
                    nint idx = first + i * rs;
                    float* di = d + i;
                    for (int k = 0; k < kc; k++, idx += cs, di += mr) *di = T.Load(origin, idx);
                }
                for (int i = h; i < mr; i++)
                    for (int k = 0; k < kc; k++) d[k * mr + i] = 0f;
            }
            else
            {
                for (int k = 0; k < kc; k++, d += mr)
                {
                    nint idx = first + k * cs;
                    int i = 0;
                    for (; i < h; i++, idx += rs) d[i] = T.Load(origin, idx);
                    for (; i < mr; i++) d[i] = 0f;
                }
            }
        }
    }

    /// <summary>Widens row <paramref name="row"/> of A (any strides, any supported dtype) into a contiguous float row.</summary>
    public static void WidenRow(in GemmOperand a, int row, float* dst)
    {
        switch (a.DType)
        {
            case DType.Float32: WidenRow<GemmF32>(a, row, dst); break;
            case DType.BFloat16: WidenRow<GemmBF16>(a, row, dst); break;
            default: WidenRow<GemmF16>(a, row, dst); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WidenRow<T>(in GemmOperand a, int row, float* dst) where T : struct, IGemmElement
    {
        nint idx = row * a.RowStride, cs = a.ColStride;
        for (int k = 0; k < a.Cols; k++, idx += cs) dst[k] = T.Load(a.Origin, idx);
    }
}
