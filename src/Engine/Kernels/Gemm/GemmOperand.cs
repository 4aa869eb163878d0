using System.Runtime.CompilerServices;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// A <see cref="MatrixView"/> resolved to a raw pointer at element (0, 0) with element strides, for the packing
/// routines. Valid only while the storage is pinned (see <see cref="Pin"/>); the extent is checked once, here.
/// </summary>
internal readonly unsafe struct GemmOperand
{
    public readonly byte* Origin;
    public readonly DType DType;
    public readonly int Rows, Cols;
    public readonly nint RowStride, ColStride;

    private GemmOperand(byte* origin, DType dtype, int rows, int cols, nint rowStride, nint colStride)
    {
        Origin = origin;
        DType = dtype;
        Rows = rows;
        Cols = cols;
        RowStride = rowStride;
        ColStride = colStride;
    }

    public static int ElementSize(DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.BFloat16 or DType.Float16 => 2,
        _ => throw new NotSupportedException($"GEMM operands must be float32, bfloat16 or float16, got {dtype.TorchName()}"),
    };

    /// <summary>Pins the view's storage and checks that every element it names lies inside it.</summary>
    public static GemmOperand Pin(in MatrixView view, out System.Buffers.MemoryHandle handle)
    {
        int size = ElementSize(view.DType);
        if (view.Rows < 0 || view.Cols < 0) throw new ArgumentException($"GEMM operand has a negative shape {view.Rows}x{view.Cols}");
        if (view.Rows > 0 && view.Cols > 0)
        {
            long lo = view.Offset, hi = view.Offset;
            long rs = (long)(view.Rows - 1) * view.RowStride, cs = (long)(view.Cols - 1) * view.ColStride;
            if (rs < 0) lo += rs; else hi += rs;
            if (cs < 0) lo += cs; else hi += cs;
            long capacity = view.Storage.ByteLength / size;
            if (lo < 0 || hi >= capacity)
                throw new ArgumentException(
                    $"GEMM operand {view.Rows}x{view.Cols} (strides {view.RowStride}, {view.ColStride}, offset {view.Offset}) " +
                    $"reaches elements [{lo}, {hi}] outside a storage of {capacity} elements");
        }
        handle = view.Storage.Pin();
        byte* origin = (byte*)handle.Pointer + (long)view.Offset * size;
        return new GemmOperand(origin, view.DType, view.Rows, view.Cols, view.RowStride, view.ColStride);
    }
}

/// <summary>Loads one element of a storage type widened to float32 (exactly: bf16 and fp16 fit in float32).</summary>
internal unsafe interface IGemmElement
{
    static abstract float Load(byte* origin, nint index);
}

internal readonly unsafe struct GemmF32 : IGemmElement
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(byte* origin, nint index) => ((float*)origin)[index];
}

internal readonly unsafe struct GemmBF16 : IGemmElement
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(byte* origin, nint index) => BitConverter.UInt32BitsToSingle((uint)((ushort*)origin)[index] << 16);
}

internal readonly unsafe struct GemmF16 : IGemmElement
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(byte* origin, nint index) => (float)((Half*)origin)[index];
}
