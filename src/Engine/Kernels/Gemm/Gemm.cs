using Harness.Engine.Runtime;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// C = A x B with float32 accumulation. A is [M, K], B is [K, N], C is float32 row-major with leading dimension ldc.
/// In batch-invariant mode (<see cref="ComputeSettings.BatchInvariant"/>) each C element is reduced over K in one fixed
/// order that depends on K alone, never on M, N, the row's position or the thread count.
/// </summary>
public static class Gemm
{
    public static void Multiply(in MatrixView a, in MatrixView b, Span<float> c, int ldc)
    {
        CheckShapes(a, b, c, ldc, 0);
        Naive(a, b, c, ldc);
    }

    /// <summary>Independent products of equal shapes: C_i starts at c[i * cBatchStride].</summary>
    public static void MultiplyBatched(ReadOnlySpan<MatrixView> a, ReadOnlySpan<MatrixView> b, Span<float> c, int ldc, int cBatchStride)
    {
        if (a.Length != b.Length) throw new ArgumentException($"batched GEMM got {a.Length} A operands and {b.Length} B operands");
        for (int i = 0; i < a.Length; i++)
        {
            CheckShapes(a[i], b[i], c, ldc, i * cBatchStride);
            Naive(a[i], b[i], c.Slice(i * cBatchStride), ldc);
        }
    }

    internal static void CheckShapes(in MatrixView a, in MatrixView b, Span<float> c, int ldc, int cOffset)
    {
        if (a.Cols != b.Rows)
            throw new ArgumentException($"mat1 and mat2 shapes cannot be multiplied ({a.Rows}x{a.Cols} and {b.Rows}x{b.Cols})");
        if (ldc < b.Cols) throw new ArgumentException($"ldc {ldc} is smaller than N {b.Cols}");
        if (a.Rows > 0 && b.Cols > 0 && (long)cOffset + (long)(a.Rows - 1) * ldc + b.Cols > c.Length)
            throw new ArgumentException($"output of {c.Length} floats cannot hold a {a.Rows}x{b.Cols} result at offset {cOffset} with ldc {ldc}");
    }

    // Placeholder order: k ascending, one FMA chain per element (replaced by the blocked kernel).
    private static void Naive(in MatrixView a, in MatrixView b, Span<float> c, int ldc)
    {
        for (int i = 0; i < a.Rows; i++)
            for (int j = 0; j < b.Cols; j++)
            {
                float acc = 0;
                for (int k = 0; k < a.Cols; k++) acc = MathF.FusedMultiplyAdd(a.Get(i, k), b.Get(k, j), acc);
                c[i * ldc + j] = acc;
            }
    }
}
