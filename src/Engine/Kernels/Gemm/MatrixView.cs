using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// A read-only 2D operand for GEMM: element (i, j) lives at storage element Offset + i*RowStride + j*ColStride.
/// Any stride works (transposed and broadcast views included, stride 0 too); the GEMM packs it.
/// DType is float32, bfloat16 or float16; packing widens to float32 exactly.
/// </summary>
public readonly record struct MatrixView(Storage Storage, DType DType, int Offset, int Rows, int Cols, int RowStride, int ColStride)
{
    /// <summary>The last two dims of a tensor (rank 2), as a view.</summary>
    public static MatrixView Of(Tensor t)
    {
        if (t.Rank != 2) throw new ArgumentException($"MatrixView.Of expects a 2D tensor, got shape {Shape.Format(t.Shape)}");
        return new MatrixView(t.Storage, t.DType, t.Offset, t.Shape[0], t.Shape[1], t.Strides[0], t.Strides[1]);
    }

    /// <summary>One element widened to float32 (slow path, for tests and edges).</summary>
    public float Get(int i, int j)
    {
        int off = Offset + i * RowStride + j * ColStride;
        return DType switch
        {
            DType.Float32 => Storage.As<float>()[off],
            DType.BFloat16 => BFloat16.ToFloat(Storage.As<ushort>()[off]),
            DType.Float16 => (float)Storage.As<Half>()[off],
            _ => throw new NotSupportedException($"GEMM operands must be float32, bfloat16 or float16, got {DType.TorchName()}"),
        };
    }
}
