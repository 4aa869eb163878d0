using System.Runtime.InteropServices;

namespace Harness.Engine.Cuda.Interop;

/// <summary>
/// libcudart (the CUDA runtime API): devices, memory, streams, events. Every call goes through <see cref="Check"/>, which
/// turns a non-zero cudaError_t into a <see cref="CudaException"/> naming the call and cudaGetErrorString's text.
/// </summary>
public static unsafe class CudaRuntime
{
    private const string Lib = CudaLibraries.Runtime;

    public const int MemcpyHostToDevice = 1;
    public const int MemcpyDeviceToHost = 2;
    public const int MemcpyDeviceToDevice = 3;
    public const int StreamNonBlocking = 1;

    // cudaDeviceAttr values used here.
    public const int AttrMaxSharedMemoryPerBlockOptin = 97;
    public const int AttrMultiProcessorCount = 16;
    public const int AttrComputeCapabilityMajor = 75;
    public const int AttrComputeCapabilityMinor = 76;

    [DllImport(Lib)] private static extern int cudaGetDeviceCount(int* count);
    [DllImport(Lib)] private static extern int cudaSetDevice(int device);
    [DllImport(Lib)] private static extern int cudaDeviceGetAttribute(int* value, int attr, int device);
    [DllImport(Lib)] private static extern int cudaRuntimeGetVersion(int* version);
    [DllImport(Lib)] private static extern int cudaDriverGetVersion(int* version);
    [DllImport(Lib)] private static extern int cudaMalloc(nint* ptr, nuint size);
    [DllImport(Lib)] private static extern int cudaFree(nint ptr);
    [DllImport(Lib)] private static extern int cudaMallocAsync(nint* ptr, nuint size, nint stream);
    [DllImport(Lib)] private static extern int cudaFreeAsync(nint ptr, nint stream);
    [DllImport(Lib)] private static extern int cudaMemcpyAsync(nint dst, nint src, nuint count, int kind, nint stream);
    [DllImport(Lib)] private static extern int cudaMemsetAsync(nint ptr, int value, nuint count, nint stream);
    [DllImport(Lib)] private static extern int cudaStreamCreateWithFlags(nint* stream, uint flags);
    [DllImport(Lib)] private static extern int cudaStreamDestroy(nint stream);
    [DllImport(Lib)] private static extern int cudaStreamSynchronize(nint stream);
    [DllImport(Lib)] private static extern int cudaDeviceSynchronize();
    [DllImport(Lib)] private static extern int cudaGetLastError();
    [DllImport(Lib)] private static extern int cudaMemGetInfo(nuint* free, nuint* total);
    [DllImport(Lib)] private static extern int cudaEventCreate(nint* evt);
    [DllImport(Lib)] private static extern int cudaEventDestroy(nint evt);
    [DllImport(Lib)] private static extern int cudaEventRecord(nint evt, nint stream);
    [DllImport(Lib)] private static extern int cudaEventSynchronize(nint evt);
    [DllImport(Lib)] private static extern int cudaEventElapsedTime(float* ms, nint start, nint end);
    [DllImport(Lib)] private static extern int cudaStreamWaitEvent(nint stream, nint evt, uint flags);
    [DllImport(Lib)] private static extern int cudaDeviceGetDefaultMemPool(nint* pool, int device);
    [DllImport(Lib)] private static extern int cudaMemPoolGetAttribute(nint pool, int attr, void* value);
    [DllImport(Lib)] private static extern int cudaMemPoolSetAttribute(nint pool, int attr, void* value);
    [DllImport(Lib)] private static extern nint cudaGetErrorString(int error);
    [DllImport(Lib)] private static extern nint cudaGetErrorName(int error);

    /// <summary>Throws <see cref="CudaException"/> for a non-zero cudaError_t.</summary>
    public static void Check(int rc, string call)
    {
        if (rc == 0) return;
        cudaGetLastError(); // clear a non-sticky error (out of memory, bad argument) so the next call's check does not report it again
        throw new CudaException(call, rc, Marshal.PtrToStringAnsi(cudaGetErrorName(rc)) ?? "?", Marshal.PtrToStringAnsi(cudaGetErrorString(rc)) ?? "?");
    }

    public static int DeviceCount()
    {
        int n;
        int rc = cudaGetDeviceCount(&n);
        if (rc == 100 /* cudaErrorNoDevice */ || rc == 35 /* cudaErrorInsufficientDriver */) return 0;
        Check(rc, "cudaGetDeviceCount");
        return n;
    }

    /// <summary>The error code of cudaGetDeviceCount, for the reason a machine has no usable GPU.</summary>
    public static string DeviceCountError()
    {
        int n;
        int rc = cudaGetDeviceCount(&n);
        return rc == 0 ? "" : $"cudaGetDeviceCount: {Marshal.PtrToStringAnsi(cudaGetErrorName(rc))}: {Marshal.PtrToStringAnsi(cudaGetErrorString(rc))}";
    }

    public static void SetDevice(int device) => Check(cudaSetDevice(device), $"cudaSetDevice({device})");

    public static int Attribute(int attr, int device)
    {
        int v;
        Check(cudaDeviceGetAttribute(&v, attr, device), $"cudaDeviceGetAttribute({attr}, device {device})");
        return v;
    }

    public static int RuntimeVersion() { int v; Check(cudaRuntimeGetVersion(&v), "cudaRuntimeGetVersion"); return v; }
    public static int DriverVersion() { int v; Check(cudaDriverGetVersion(&v), "cudaDriverGetVersion"); return v; }

    public static nint MallocAsync(long bytes, nint stream)
    {
        nint p;
        Check(cudaMallocAsync(&p, (nuint)Math.Max(bytes, 1), stream), $"cudaMallocAsync({bytes} bytes)");
        return p;
    }

    /// <summary>Frees stream-ordered; returns the error code instead of throwing (finalizers call it).</summary>
    public static int FreeAsync(nint ptr, nint stream) => cudaFreeAsync(ptr, stream);

    public static void MemcpyAsync(nint dst, nint src, long bytes, int kind, nint stream)
    {
        if (bytes == 0) return;
        Check(cudaMemcpyAsync(dst, src, (nuint)bytes, kind, stream), $"cudaMemcpyAsync({bytes} bytes, kind {kind})");
    }

    public static void MemsetAsync(nint ptr, int value, long bytes, nint stream)
    {
        if (bytes == 0) return;
        Check(cudaMemsetAsync(ptr, value, (nuint)bytes, stream), $"cudaMemsetAsync({bytes} bytes)");
    }

    public static nint StreamCreate()
    {
        nint s;
        Check(cudaStreamCreateWithFlags(&s, StreamNonBlocking), "cudaStreamCreateWithFlags");
        return s;
    }

    public static void StreamDestroy(nint stream) => Check(cudaStreamDestroy(stream), "cudaStreamDestroy");
    public static void StreamSynchronize(nint stream) => Check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    public static void DeviceSynchronize() => Check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

    /// <summary>Checks (and clears) the sticky last error of the runtime, naming what just ran.</summary>
    public static void CheckLastError(string after) => Check(cudaGetLastError(), $"{after} (cudaGetLastError)");

    public static (long Free, long Total) MemGetInfo()
    {
        nuint f, t;
        Check(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
        return ((long)f, (long)t);
    }

    // cudaMemPoolAttr: cudaMemPoolAttrReleaseThreshold = 4, cudaMemPoolAttrUsedMemCurrent = 7, cudaMemPoolAttrUsedMemHigh = 8.
    /// <summary>Peak bytes in use from the device's default stream-ordered pool since the last <see cref="ResetPeakPoolBytes"/>.</summary>
    public static long PeakPoolBytes(int device)
    {
        nint pool;
        Check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool");
        ulong v;
        Check(cudaMemPoolGetAttribute(pool, 8, &v), "cudaMemPoolGetAttribute(UsedMemHigh)");
        return (long)v;
    }

    public static void ResetPeakPoolBytes(int device)
    {
        nint pool;
        Check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool");
        ulong zero = 0;
        Check(cudaMemPoolSetAttribute(pool, 8, &zero), "cudaMemPoolSetAttribute(UsedMemHigh)");
    }

    /// <summary>Keeps freed pool memory cached instead of returning it to the driver at each synchronization (as torch's allocator does).</summary>
    public static void KeepPoolMemory(int device)
    {
        nint pool;
        Check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool");
        ulong max = ulong.MaxValue;
        Check(cudaMemPoolSetAttribute(pool, 4, &max), "cudaMemPoolSetAttribute(ReleaseThreshold)");
    }

    public static nint EventCreate() { nint e; Check(cudaEventCreate(&e), "cudaEventCreate"); return e; }
    public static void EventDestroy(nint e) => Check(cudaEventDestroy(e), "cudaEventDestroy");
    public static void EventRecord(nint e, nint stream) => Check(cudaEventRecord(e, stream), "cudaEventRecord");
    public static void EventSynchronize(nint e) => Check(cudaEventSynchronize(e), "cudaEventSynchronize");
    public static void StreamWaitEvent(nint stream, nint e) => Check(cudaStreamWaitEvent(stream, e, 0), "cudaStreamWaitEvent");

    public static float EventElapsedMs(nint start, nint end)
    {
        float ms;
        Check(cudaEventElapsedTime(&ms, start, end), "cudaEventElapsedTime");
        return ms;
    }
}
