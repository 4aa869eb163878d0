using Harness.Engine.Cuda.Interop;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// Moving tensors between host and device, and device allocation. A device tensor is an ordinary <see cref="Tensor"/>
/// whose <see cref="Storage"/> holds <see cref="DeviceMemory"/>: views (reshape, transpose, narrow, expand) work as on the
/// host; reading its elements from C# needs <see cref="Tensor.ToHost"/> first.
/// </summary>
public static class CudaTensors
{
    /// <summary>The device a tensor lives on, or null on the host: what a model asks where its weights are (a KV cache, a
    /// table to upload) instead of branching on the device itself.</summary>
    public static CudaDevice? DeviceOf(Tensor t) => (t.Storage.Device as DeviceMemory)?.Device;

    /// <summary>The CUDA allocation behind a device tensor.</summary>
    internal static DeviceMemory Memory(Tensor t) => t.Storage.Device as DeviceMemory
        ?? throw new InvalidOperationException($"{t} is on the host; a kernel needs a device tensor (call ToDevice first)");

    extension(Tensor t)
    {
        /// <summary>The device of a device tensor (throws for a host tensor).</summary>
        public CudaDevice CudaDevice => DeviceOf(t) ?? throw new InvalidOperationException($"{t} is on the host, not on a CUDA device");

        /// <summary>A contiguous copy on <paramref name="device"/> (this tensor when it is already there).</summary>
        public Tensor ToDevice(CudaDevice device) => DeviceOf(t) == device ? t : Upload(t.IsCuda ? t.ToHost() : t, device);
    }

    /// <summary>
    /// An uninitialised contiguous device tensor of any size: its storage is one allocation of 64-bit length (Gemma3n-E4B's
    /// per-layer table is 4.7 GB, 2^31 + 201326592 elements). The kernels index with 64-bit offsets from their tensor's
    /// address; one that walks a whole tensor by an int element count asks <see cref="Tensor.NumEl"/>, which says to take
    /// a view first instead of wrapping (an embedding lookup or a vocab shard of such a table is a view).
    /// </summary>
    public static Tensor Empty(CudaDevice device, DType dtype, params int[] shape)
    {
        long bytes = Tensors.Shape.NumEl(shape) * dtype.Size();
        return new Tensor(new Storage(device.Allocate(bytes)), dtype, (int[])shape.Clone());
    }

    /// <summary>A zero-filled contiguous device tensor.</summary>
    public static Tensor Zeros(CudaDevice device, DType dtype, params int[] shape)
    {
        var t = Empty(device, dtype, shape);
        device.MakeCurrent();
        CudaRuntime.MemsetAsync(Memory(t).Pointer, 0, t.ElementCount * dtype.Size(), device.Stream);
        return t;
    }

    /// <summary>Device address of element [0, ...] of a device tensor.</summary>
    public static nint Address(Tensor t)
    {
        var mem = Memory(t);
        return mem.Pointer + (nint)((long)t.Offset * t.DType.Size());
    }

    /// <summary>A contiguous device copy of a host tensor (any strides).</summary>
    public static Tensor Upload(Tensor host, CudaDevice device)
    {
        var src = host.Contiguous();
        var t = Empty(device, host.DType, host.ShapeArray);
        long bytes = src.ElementCount * src.DType.Size();
        if (bytes == 0) return t;
        unsafe
        {
            using var pin = src.Storage.Pin();
            device.MakeCurrent();
            CudaRuntime.MemcpyAsync(Memory(t).Pointer, (nint)((byte*)pin.Pointer + (long)src.Offset * src.DType.Size()), bytes,
                CudaRuntime.MemcpyHostToDevice, device.Stream);
            // No synchronization: from pageable memory, cudaMemcpyAsync returns once the bytes are staged (CUDA's
            // "API synchronization behavior"), so the host buffer may move or change afterwards.
        }
        return t;
    }

    /// <summary>A contiguous host copy of a device tensor (any strides; the device makes it contiguous first).</summary>
    public static Tensor Download(Tensor dev)
    {
        var device = Memory(dev).Device;
        var src = dev.IsContiguous ? dev : CudaOps.Copy(dev, dev.DType);
        var host = Tensor.Zeros(dev.DType, dev.ShapeArray);
        long bytes = src.ElementCount * src.DType.Size();
        if (bytes == 0) return host;
        unsafe
        {
            using var pin = host.Storage.Pin();
            device.MakeCurrent();
            CudaRuntime.MemcpyAsync((nint)pin.Pointer, Address(src), bytes, CudaRuntime.MemcpyDeviceToHost, device.Stream);
            device.Synchronize();
        }
        return host;
    }
}
