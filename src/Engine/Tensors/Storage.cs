using System.Buffers;
using System.Runtime.InteropServices;

namespace Harness.Engine.Tensors;

/// <summary>
/// The bytes behind one or more tensors: a managed array, or memory owned elsewhere
/// (a memory-mapped safetensors file), or device memory on a GPU (<see cref="Device"/>; its bytes are not readable from
/// C#: <see cref="Tensor.ToHost"/> copies them). Views share a storage; nothing here copies.
/// </summary>
public sealed class Storage
{
    private readonly Memory<byte> _bytes;

    /// <summary>Keeps the owner of foreign memory (e.g. a memory-mapped file) alive while a tensor uses it.</summary>
    public object? Owner { get; }

    public Storage(Memory<byte> bytes, object? owner = null)
    {
        _bytes = bytes;
        Owner = owner;
    }

    /// <summary>Device memory (a CUDA allocation); the host accessors below throw for it.</summary>
    public Storage(Cuda.DeviceMemory device)
    {
        Device = device ?? throw new ArgumentNullException(nameof(device));
        _bytes = Memory<byte>.Empty;
        Owner = device;
    }

    /// <summary>The device allocation, or null for host memory.</summary>
    public Cuda.DeviceMemory? Device { get; }

    public bool IsDevice => Device is not null;

    private Memory<byte> HostBytes => Device is null ? _bytes : throw new InvalidOperationException(
        $"this tensor lives on {Device.Device} ({Device.Bytes} bytes of device memory) and was read on the host: an op with no CUDA path " +
        "(give the op a device path, or copy the tensor to the host with ToHost() where a host copy is meant)");

    public static Storage Allocate(long byteCount)
    {
        if (byteCount > Array.MaxLength)
            throw new OutOfMemoryException($"tensor of {byteCount} bytes exceeds the {Array.MaxLength}-byte storage limit");
        // GC.AllocateUninitializedArray would skip zeroing; tensors created by Allocate are expected zeroed.
        return new Storage(new byte[byteCount]);
    }

    public int ByteLength => Device is null ? _bytes.Length : (int)Device.Bytes;

    public Span<byte> Bytes => HostBytes.Span;

    public Memory<byte> Memory => HostBytes;

    /// <summary>The storage reinterpreted as elements of T (no copy).</summary>
    public Span<T> As<T>() where T : struct => MemoryMarshal.Cast<byte, T>(HostBytes.Span);

    /// <summary>Pins the storage and returns a handle; the caller disposes it.</summary>
    public MemoryHandle Pin() => HostBytes.Pin();
}
