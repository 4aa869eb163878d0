using Harness.Engine.Cuda.Interop;

namespace Harness.Engine.Cuda;

/// <summary>
/// GPU time per kernel name: while a profiler is active on a thread, every launch there is bracketed by two events, and
/// <see cref="Report"/> sums the elapsed times per kernel (each launch's own duration; the gaps between launches are
/// not counted). For the bench's decode-step breakdown; the events add host work, so time the run itself without it.
/// </summary>
public sealed class KernelProfiler : IDisposable
{
    [ThreadStatic] private static KernelProfiler? _active;
    private readonly List<(string Name, nint Start, nint End)> _launches = new();
    private nint _pending;

    public static KernelProfiler? Active => _active;

    /// <summary>Starts profiling the calling thread's launches until disposed.</summary>
    public static KernelProfiler Start() => _active = new KernelProfiler();

    internal void Before(nint stream)
    {
        _pending = CudaRuntime.EventCreate();
        CudaRuntime.EventRecord(_pending, stream);
    }

    internal void After(string name, nint stream)
    {
        var end = CudaRuntime.EventCreate();
        CudaRuntime.EventRecord(end, stream);
        _launches.Add((name, _pending, end));
    }

    /// <summary>(kernel, launches, total ms) by total time, longest first; waits for the last event.</summary>
    public List<(string Name, int Count, double Ms)> Report()
    {
        var sums = new Dictionary<string, (int, double)>();
        foreach (var (name, s, e) in _launches)
        {
            CudaRuntime.EventSynchronize(e);
            var (c, ms) = sums.GetValueOrDefault(name);
            sums[name] = (c + 1, ms + CudaRuntime.EventElapsedMs(s, e));
        }
        return sums.Select(kv => (kv.Key, kv.Value.Item1, kv.Value.Item2)).OrderByDescending(r => r.Item3).ToList();
    }

    public void Dispose()
    {
        if (_active == this) _active = null;
        foreach (var (_, s, e) in _launches) { CudaRuntime.EventDestroy(s); CudaRuntime.EventDestroy(e); }
        _launches.Clear();
    }
}
