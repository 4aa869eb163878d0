using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Harness.Engine.Cuda.Interop;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// One GPU: its properties, the stream work is queued on, a cuBLAS handle per stream, and the NVRTC kernel cache
/// (per device, keyed by the SHA-256 of source and options; cubins also kept under ~/.cache/harness/cuda-kernels).
/// <para>Streams: each thread uses <see cref="Stream"/>: the device's default stream unless <see cref="UseStream"/> set
/// another for the current flow (the ranks of a <c>CudaProcessGroup</c> each have their own).</para>
/// </summary>
public sealed class CudaDevice
{
    private static readonly ConcurrentDictionary<int, CudaDevice> Devices = new();
    private static readonly object OpenGate = new();
    private static string? _unavailable;

    private readonly ConcurrentDictionary<string, Lazy<nint>> _modules = new();
    private readonly ConcurrentDictionary<nint, nint> _blasHandles = new();
    private readonly AsyncLocal<nint?> _stream = new();
    [ThreadStatic] private static int _currentOrdinalPlusOne;

    public int Ordinal { get; }
    public string Name { get; }
    public int Major { get; }
    public int Minor { get; }
    public int Multiprocessors { get; }
    public long TotalMemory { get; }
    /// <summary>The stream every thread uses unless <see cref="UseStream"/> says otherwise.</summary>
    public nint DefaultStream { get; }

    /// <summary>Synchronize after every launch so an asynchronous fault names its kernel (HARNESS_CUDA_SYNC=1, read by the host:
    /// <see cref="Runtime.EngineSettings.CudaSyncEachLaunch"/>; not settable, so no check can leave it changed).</summary>
    public static bool SyncEachLaunch => Runtime.EngineSettings.Current.CudaSyncEachLaunch;

    private CudaDevice(int ordinal)
    {
        Ordinal = ordinal;
        CudaRuntime.SetDevice(ordinal);
        _currentOrdinalPlusOne = ordinal + 1;
        Major = CudaRuntime.Attribute(CudaRuntime.AttrComputeCapabilityMajor, ordinal);
        Minor = CudaRuntime.Attribute(CudaRuntime.AttrComputeCapabilityMinor, ordinal);
        Multiprocessors = CudaRuntime.Attribute(CudaRuntime.AttrMultiProcessorCount, ordinal);
        Name = CudaDriver.DeviceName(ordinal);
        TotalMemory = CudaRuntime.MemGetInfo().Total;
        DefaultStream = CudaRuntime.StreamCreate();
        CudaRuntime.KeepPoolMemory(ordinal); // freed blocks stay cached for the next allocation (no driver call per op)
    }

    /// <summary>"cuda:0".</summary>
    public override string ToString() => $"cuda:{Ordinal}";

    /// <summary>This device's tensor backend (what a <see cref="Tensor"/> over its memory copies and gathers through).</summary>
    public ITensorBackend Backend => _backend ??= new CudaBackend(this);
    private CudaBackend? _backend;

    /// <summary>The device, opening it on first use; throws <see cref="CudaUnavailableException"/> saying why there is none.</summary>
    public static CudaDevice Get(int ordinal = 0)
    {
        if (Devices.TryGetValue(ordinal, out var d)) return d;
        lock (OpenGate)
        {
            if (Devices.TryGetValue(ordinal, out d)) return d;
            if (_unavailable is not null) throw new CudaUnavailableException(_unavailable);
            try
            {
                CudaLibraries.LoadAll();
                CudaDriver.Init();
                int count = CudaRuntime.DeviceCount();
                if (count == 0)
                    throw new CudaUnavailableException("no CUDA device is visible (" + CudaRuntime.DeviceCountError() + ")");
                if (ordinal >= count) throw new CudaUnavailableException($"cuda:{ordinal} asked for, but only {count} CUDA device(s) are visible");
            }
            catch (CudaUnavailableException e) { _unavailable = e.Message; throw; }
            catch (CudaException e) { _unavailable = e.Message; throw new CudaUnavailableException(e.Message); }
            catch (DllNotFoundException e) { _unavailable = e.Message; throw new CudaUnavailableException(e.Message); }
            d = new CudaDevice(ordinal);
            Devices[ordinal] = d;
            return d;
        }
    }

    /// <summary>True when a GPU is usable; otherwise <paramref name="reason"/> says why (for test skips).</summary>
    public static bool TryGet(out CudaDevice? device, out string reason, int ordinal = 0)
    {
        try
        {
            device = Get(ordinal);
            reason = "";
            return true;
        }
        catch (CudaUnavailableException e)
        {
            device = null;
            reason = e.Message;
            return false;
        }
    }

    /// <summary>Makes this device current on the calling thread (cheap when it already is).</summary>
    public void MakeCurrent()
    {
        if (_currentOrdinalPlusOne == Ordinal + 1) return;
        CudaRuntime.SetDevice(Ordinal);
        _currentOrdinalPlusOne = Ordinal + 1;
    }

    /// <summary>The stream of the current flow.</summary>
    public nint Stream => _stream.Value ?? DefaultStream;

    /// <summary>Queues the current flow's work on <paramref name="stream"/> until disposed.</summary>
    public IDisposable UseStream(nint stream)
    {
        var previous = _stream.Value;
        _stream.Value = stream;
        return new Restore(() => _stream.Value = previous);
    }

    /// <summary>
    /// A stream of its own for one flow (a rank, a tower, a graph decoder): created here, then current for the calling flow
    /// until the lease is disposed, which synchronizes it, destroys the cuBLAS handle bound to it and destroys the stream.
    /// Memory allocated on it and freed later (a finalizer after the flow ended) is freed on <see cref="DefaultStream"/>:
    /// the stream's work is complete by then. Without this every rank of every scenario left its stream and its cuBLAS
    /// handle (with the handle's workspace) behind: `harness soak --device cuda --offline` grew by 4.6 GB of device memory a
    /// round of the catalog (H100, 101 scenarios) and each round ran slower than the last (18, 45, 88 s).
    /// </summary>
    public IDisposable OpenStream()
    {
        MakeCurrent();
        var stream = CudaRuntime.StreamCreate();
        _private[stream] = 0;
        var flow = UseStream(stream);
        return new Restore(() =>
        {
            flow.Dispose();
            RetireStream(stream);
        });
    }

    /// <summary>Ends a stream made by <see cref="OpenStream"/> (or <see cref="CreateStream"/>): waits for its work, then its
    /// cuBLAS handle and the stream go; frees that name it afterwards go to the default stream.</summary>
    public void RetireStream(nint stream)
    {
        MakeCurrent();
        CudaRuntime.StreamSynchronize(stream);
        lock (_streamGate) _private.TryRemove(stream, out _);
        if (_blasHandles.TryRemove(stream, out var handle)) Cublas.Destroy(handle);
        CudaRuntime.StreamDestroy(stream);
    }

    /// <summary>A stream of its own that the caller selects with <see cref="UseStream"/> and ends with <see cref="RetireStream"/>
    /// (a graph decoder keeps one for its lifetime).</summary>
    public nint CreateStream()
    {
        MakeCurrent();
        var stream = CudaRuntime.StreamCreate();
        _private[stream] = 0;
        return stream;
    }

    private readonly ConcurrentDictionary<nint, byte> _private = new();
    private readonly object _streamGate = new();

    /// <summary>Frees <paramref name="pointer"/> stream-ordered on <paramref name="stream"/>, or on the default stream when that
    /// stream was retired (its work is complete: <see cref="RetireStream"/> synchronized it first).</summary>
    internal void FreeOn(nint pointer, nint stream)
    {
        MakeCurrent();
        lock (_streamGate)
        {
            var on = stream == DefaultStream || _private.ContainsKey(stream) ? stream : DefaultStream;
            CudaRuntime.Check(CudaRuntime.FreeAsync(pointer, on), "cudaFreeAsync");
        }
    }

    /// <summary>The cuBLAS handle bound to the current flow's stream.</summary>
    public nint BlasHandle
    {
        get
        {
            MakeCurrent();
            var s = Stream;
            return _blasHandles.GetOrAdd(s, st => Cublas.Create(st));
        }
    }

    public void Synchronize()
    {
        MakeCurrent();
        CudaRuntime.StreamSynchronize(Stream);
    }

    /// <summary>Device memory, stream-ordered on the current stream.</summary>
    public DeviceMemory Allocate(long bytes)
    {
        MakeCurrent();
        Interlocked.Increment(ref _allocations);
        if (CudaArena.Current is { } arena && arena.Device == this) return arena.Take(bytes); // a captured step: fixed addresses
        // Unreachable device tensors are freed by their finalizers; the GC does not see device memory, so after every
        // CollectEvery bytes allocated a full collection runs (rare: GBs apart), and an allocation that fails retries once
        // after one. (No GC.AddMemoryPressure: it makes the GC collect far more often than short-lived tensors need.)
        if (Interlocked.Add(ref _sinceCollect, bytes) > CollectEvery) CollectGarbage();
        nint p;
        try { p = CudaRuntime.MallocAsync(bytes, Stream); }
        catch (CudaException e) when (e.ErrorName == "cudaErrorMemoryAllocation" && bytes < TotalMemory)
        {
            CollectGarbage();
            p = CudaRuntime.MallocAsync(bytes, Stream);
        }
        return new DeviceMemory(this, p, bytes, Stream);
    }

    /// <summary>Device allocations made by this process (the bench counts them per decode step).</summary>
    public long Allocations => Interlocked.Read(ref _allocations);
    private long _allocations;

    private long _sinceCollect;
    private long CollectEvery => Math.Max(1L << 30, TotalMemory / 16);

    private void CollectGarbage()
    {
        Interlocked.Exchange(ref _sinceCollect, 0);
        GC.Collect();
        GC.WaitForPendingFinalizers();
    }

    private readonly ConcurrentDictionary<string, nint> _byKey = new();

    /// <summary>
    /// The function for a short <paramref name="key"/> (kernel and dtypes, e.g. "unary_silu/bf16/bf16"): the source is built
    /// and hashed only the first time, so a launch costs one dictionary lookup.
    /// </summary>
    public nint Function(string key, string function, Func<string> source) =>
        _byKey.TryGetValue(key, out var f) ? f : _byKey.GetOrAdd(key, _ => Function(source(), function));

    /// <summary>The compiled function <paramref name="function"/> of <paramref name="source"/>, compiled once per device.</summary>
    public nint Function(string source, string function)
    {
        var key = Hash(source);
        var module = _modules.GetOrAdd(key, k => new Lazy<nint>(() => LoadModule(source, k, function))).Value;
        return _functions.GetOrAdd((module, function), mf => { MakeCurrent(); return CudaDriver.ModuleGetFunction(mf.Item1, mf.Item2); });
    }

    private readonly ConcurrentDictionary<(nint, string), nint> _functions = new();

    /// <summary>Number of NVRTC compilations this process ran (the cache's effect is testable).</summary>
    public int Compilations => _compilations;
    private int _compilations;

    private nint LoadModule(string source, string key, string what)
    {
        MakeCurrent();
        int arch = Major * 10 + Minor;
        var dir = Path.Combine(Runtime.EngineSettings.Current.CacheDirectory, "cuda-kernels", $"sm_{arch}");
        var file = Path.Combine(dir, key + ".cubin");
        byte[]? cubin = null;
        try { if (File.Exists(file)) cubin = File.ReadAllBytes(file); } catch (IOException) { }
        if (cubin is null)
        {
            cubin = Nvrtc.CompileToCubin(source, what + ".cu", arch, []);
            Interlocked.Increment(ref _compilations);
            try
            {
                Directory.CreateDirectory(dir);
                var tmp = file + "." + Environment.ProcessId + ".tmp";
                File.WriteAllBytes(tmp, cubin);
                File.Move(tmp, file, overwrite: true);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return CudaDriver.ModuleLoadData(cubin, what);
    }

    private static string Hash(string source) =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes("nvrtc-v1\n" + source)))[..32].ToLowerInvariant();

    private sealed class Restore(Action undo) : IDisposable
    {
        private Action? _undo = undo;
        public void Dispose() { _undo?.Invoke(); _undo = null; }
    }
}

/// <summary>
/// A device allocation (cudaMallocAsync on the stream that asked). Freed stream-ordered on that stream by Dispose or the
/// finalizer (see <see cref="CudaDevice.Allocate"/> for when collections run).
/// </summary>
public sealed class DeviceMemory : IDeviceMemory
{
    private nint _pointer;
    private readonly nint _stream;
    private readonly bool _owned = true;

    public CudaDevice Device { get; }
    public long Bytes { get; }
    public ITensorBackend Backend => Device.Backend;
    public nint Pointer => _pointer != 0 || Bytes == 0 ? _pointer : throw new ObjectDisposedException("device memory was freed");

    internal DeviceMemory(CudaDevice device, nint pointer, long bytes, nint stream)
    {
        Device = device;
        _pointer = pointer;
        Bytes = bytes;
        _stream = stream;
    }

    /// <summary>A piece of memory someone else owns (a <see cref="CudaArena"/> block): never freed here.</summary>
    internal DeviceMemory(CudaDevice device, nint pointer, long bytes)
    {
        Device = device;
        _pointer = pointer;
        Bytes = bytes;
        _owned = false;
        GC.SuppressFinalize(this);
    }

    /// <summary>The allocation a <see cref="Slice"/> is a window of: kept alive as long as the window is.</summary>
    private readonly DeviceMemory? _parent;

    private DeviceMemory(DeviceMemory parent, long byteOffset, long byteLength)
        : this(parent.Device, parent.Pointer + (nint)byteOffset, byteLength) => _parent = parent;

    public IDeviceMemory Slice(long byteOffset, long byteLength)
    {
        if (byteOffset < 0 || byteLength < 0 || byteOffset > Bytes - byteLength)
            throw new ArgumentOutOfRangeException(nameof(byteOffset), $"window [{byteOffset}, {byteOffset + byteLength}) outside a device allocation of {Bytes} bytes");
        return new DeviceMemory(_parent ?? this, (_parent is null ? 0 : Pointer - _parent.Pointer) + byteOffset, byteLength);
    }

    public void Dispose()
    {
        Free(disposing: true);
        GC.SuppressFinalize(this);
    }

    ~DeviceMemory() => Free(disposing: false);

    // Dispose: a failed free is an error (CudaException naming cudaFreeAsync). The finalizer cannot throw (it would end the
    // process) and runs at teardown too, when the driver frees everything anyway.
    private void Free(bool disposing)
    {
        var p = Interlocked.Exchange(ref _pointer, 0);
        if (p == 0 || !_owned) return;
        try
        {
            Device.FreeOn(p, _stream);
        }
        catch (Exception) when (!disposing) { }
    }
}
