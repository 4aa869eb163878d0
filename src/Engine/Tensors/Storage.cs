using System.Buffers;
using System.Runtime.InteropServices;

namespace Harness.Engine.Tensors;

/// <summary>
/// The bytes behind one or more tensors: a managed array, or memory owned elsewhere
/// (a memory-mapped safetensors file). Views share a storage; nothing here copies.
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

    public static Storage Allocate(long byteCount)
    {
        if (byteCount > Array.MaxLength)
            throw new OutOfMemoryException($"tensor of {byteCount} bytes exceeds the {Array.MaxLength}-byte storage limit");
        // GC.AllocateUninitializedArray would skip zeroing; tensors created by Allocate are expected zeroed.
        return new Storage(new byte[byteCount]);
    }

    public int ByteLength => _bytes.Length;

    public Span<byte> Bytes => _bytes.Span;

    public Memory<byte> Memory => _bytes;

    /// <summary>The storage reinterpreted as elements of T (no copy).</summary>
    public Span<T> As<T>() where T : struct => MemoryMarshal.Cast<byte, T>(_bytes.Span);

    /// <summary>Pins the storage and returns a handle; the caller disposes it.</summary>
    public MemoryHandle Pin() => _bytes.Pin();
}
