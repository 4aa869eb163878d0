using System.Runtime.InteropServices;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// A strided view as a kernel sees it: rank &lt;= 8, shape, strides and offset in elements (the C struct <c>Desc</c> of
/// <see cref="CudaSource.Prelude"/>, passed by value).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct TensorDesc
{
    public const int MaxRank = 8;
    public int Rank;
    public fixed int Shape[MaxRank];
    public fixed long Strides[MaxRank];
    public long Offset;

    public static TensorDesc Of(Tensor t)
    {
        if (t.Rank > MaxRank) throw new NotSupportedException($"CUDA kernels take tensors of rank <= {MaxRank}, got shape {Tensors.Shape.Format(t.Shape)}");
        var d = new TensorDesc { Rank = t.Rank, Offset = 0 };
        for (int i = 0; i < t.Rank; i++) { d.Shape[i] = t.Shape[i]; d.Strides[i] = t.Strides[i]; }
        return d;
    }
}

/// <summary>Packs kernel arguments (each a pointer to its value, as cuLaunchKernel takes them) and launches.</summary>
public sealed unsafe class KernelArgs : IDisposable
{
    // One argument block per thread, reused by every launch on it (cuLaunchKernel copies the values at the call).
    [ThreadStatic] private static nint t_buffer, t_pointers;
    [ThreadStatic] private static bool t_inUse;
    private readonly byte* _buffer;
    private readonly void** _pointers;
    private readonly bool _owned;
    private int _used, _count;

    public KernelArgs()
    {
        if (t_buffer == 0)
        {
            t_buffer = (nint)NativeMemory.AlignedAlloc(4096, 16);
            t_pointers = (nint)NativeMemory.Alloc(64, (nuint)sizeof(void*));
        }
        if (t_inUse)
        {   // nested use on one thread (not done today): an owned block
            _buffer = (byte*)NativeMemory.AlignedAlloc(4096, 16);
            _pointers = (void**)NativeMemory.Alloc(64, (nuint)sizeof(void*));
            _owned = true;
        }
        else
        {
            _buffer = (byte*)t_buffer;
            _pointers = (void**)t_pointers;
            t_inUse = true;
        }
    }

    public KernelArgs Add<T>(T value) where T : unmanaged
    {
        int align = Math.Min(sizeof(T), 8);
        _used = (_used + align - 1) / align * align;
        if (_used + sizeof(T) > 4096 || _count == 64) throw new InvalidOperationException("too many kernel arguments");
        *(T*)(_buffer + _used) = value;
        _pointers[_count++] = _buffer + _used;
        _used += sizeof(T);
        return this;
    }

    /// <summary>The device address of a tensor's element [0, ...] (storage pointer plus offset).</summary>
    public KernelArgs Ptr(Tensor t) => Add(CudaTensors.Address(t));

    /// <summary>Kernel launches made by this process (the bench counts them per decode step).</summary>
    public static long Launches => Interlocked.Read(ref _launches);
    private static long _launches;

    public void Launch(CudaDevice device, nint function, string name, (uint, uint, uint) grid, (uint, uint, uint) block, uint shared = 0)
    {
        if (grid.Item1 == 0 || grid.Item2 == 0 || grid.Item3 == 0) return;
        device.MakeCurrent();
        Interlocked.Increment(ref _launches);
        var profiler = KernelProfiler.Active;
        profiler?.Before(device.Stream);
        CudaDriver.Launch(function, name, grid, block, shared, device.Stream, _pointers);
        profiler?.After(name, device.Stream);
        CudaRuntime.CheckLastError(name);
        if (CudaDevice.SyncEachLaunch) device.Synchronize();
    }

    public void Dispose()
    {
        if (_owned)
        {
            NativeMemory.AlignedFree(_buffer);
            NativeMemory.Free(_pointers);
        }
        else t_inUse = false;
    }
}
