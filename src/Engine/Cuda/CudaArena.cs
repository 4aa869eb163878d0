namespace Harness.Engine.Cuda;

/// <summary>
/// A bump allocator over one device block, for a decode step that is captured into a CUDA graph: while an arena is
/// current for a flow (<see cref="Use"/>), <see cref="CudaDevice.Allocate"/> hands out consecutive 256-byte aligned pieces
/// of it instead of calling cudaMallocAsync, and their frees do nothing. Replaying the same step makes the same
/// allocations in the same order, so every tensor of the step lands at the same address each time, which is what a
/// graph's baked-in kernel arguments need. <see cref="Reset"/> starts over (the previous step's tensors are dead).
/// </summary>
public sealed class CudaArena : IDisposable
{
    private static readonly AsyncLocal<CudaArena?> Active = new();
    private readonly DeviceMemory _block;
    private long _used;

    public CudaDevice Device { get; }
    public long Capacity => _block.Bytes;
    /// <summary>Bytes handed out since the last <see cref="Reset"/>.</summary>
    public long Used => _used;

    /// <summary>The arena of the current flow, or null (ordinary stream-ordered allocation).</summary>
    public static CudaArena? Current => Active.Value;

    public CudaArena(CudaDevice device, long bytes)
    {
        Device = device;
        _block = device.Allocate(bytes);
    }

    /// <summary>Makes this arena the current flow's allocator until disposed.</summary>
    public IDisposable Use()
    {
        var previous = Active.Value;
        Active.Value = this;
        return new Restore(() => Active.Value = previous);
    }

    /// <summary>No arena for the current flow until disposed: what is allocated meanwhile outlives the step (a layer's
    /// cached weight made during the eager step before a capture).</summary>
    public static IDisposable Suspend()
    {
        var previous = Active.Value;
        Active.Value = null;
        return new Restore(() => Active.Value = previous);
    }

    public void Reset() => _used = 0;

    internal DeviceMemory Take(long bytes)
    {
        long start = (_used + 255) / 256 * 256;
        if (start + bytes > _block.Bytes)
            throw new ExhaustedException(_block.Bytes, start + bytes);
        _used = start + bytes;
        return new DeviceMemory(Device, _block.Pointer + (nint)start, bytes);
    }

    public void Dispose() => _block.Dispose();

    /// <summary>A step asked the arena for more than it holds: <see cref="Needed"/> bytes at least (the step so far and
    /// this piece), so the caller can make a larger arena and run the step again.</summary>
    public sealed class ExhaustedException(long capacity, long needed)
        : OutOfMemoryException($"CUDA arena of {capacity} bytes exhausted: a step needs at least {needed}")
    {
        public long Needed { get; } = needed;
    }

    private sealed class Restore(Action undo) : IDisposable
    {
        private Action? _undo = undo;
        public void Dispose() { _undo?.Invoke(); _undo = null; }
    }
}
