using System.Runtime.InteropServices;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// Per-thread packing buffers (64-byte aligned native memory, grown on demand, reused across calls). A thread's
/// buffers are freed by the finalizer once the thread is gone.
/// </summary>
internal sealed unsafe class GemmScratch
{
    [ThreadStatic] private static GemmScratch? _current;

    private float* _a, _b, _row;
    private nint _aLength, _bLength, _rowLength;
    private readonly float* _tile;

    /// <summary>Largest micro-tile of any kernel (MR x NR floats), for edge tiles (the packed path's 14 x 32 and 8 x 128 included).</summary>
    public const int TileFloats = 16 * 128;

    private GemmScratch()
    {
        _tile = (float*)NativeMemory.AlignedAlloc(TileFloats * sizeof(float), 64);
    }

    public static GemmScratch Current => _current ??= new GemmScratch();

    public float* Tile => _tile;

    public float* A(nint floats) => Ensure(ref _a, ref _aLength, floats);

    public float* B(nint floats) => Ensure(ref _b, ref _bLength, floats);

    public float* Row(nint floats) => Ensure(ref _row, ref _rowLength, floats);

    private static float* Ensure(ref float* buffer, ref nint length, nint floats)
    {
        if (floats <= length) return buffer;
        NativeMemory.AlignedFree(buffer);
        buffer = null;
        length = 0;
        // Round up a little so slowly growing shapes do not reallocate every call.
        nint size = Math.Max(floats, 1024) + 64;
        buffer = (float*)NativeMemory.AlignedAlloc((nuint)(size * sizeof(float)), 64);
        length = size;
        return buffer;
    }

    ~GemmScratch()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_row);
        NativeMemory.AlignedFree(_tile);
    }
}
