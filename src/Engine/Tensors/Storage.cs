using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Harness.Engine.Tensors;

/// <summary>
/// The bytes behind one or more tensors: a managed array, or memory owned elsewhere (a memory-mapped safetensors
/// file: a native pointer and a 64-bit length, so a mapped tensor may be any size), or device memory on a GPU
/// (<see cref="Device"/>; its bytes are not readable from C#: <see cref="Tensor.ToHost"/> copies them). Views share a
/// storage; nothing here copies.
/// <para>
/// Sizes past 2 GiB: a managed array stops at <see cref="Array.MaxLength"/>, a span at 2^31 - 1 elements. Native storage
/// has no such limit; <see cref="Window"/> cuts a piece of it without copying, and the tensor views over a storage past
/// 2 GiB cut one for each view (see <see cref="Tensor"/>), so every view of a looked-up row or a rank's shard is an
/// ordinary small storage to the kernels. <see cref="Span(long, int)"/> reads any piece by a 64-bit byte offset.
/// </para>
/// </summary>
public sealed unsafe class Storage
{
    private readonly Memory<byte> _bytes;   // managed (or foreign Memory) storage
    private readonly byte* _native;         // native storage (a mapping), else null
    private readonly long _length;

    /// <summary>Keeps the owner of foreign memory (e.g. a memory-mapped file) alive while a tensor uses it.</summary>
    public object? Owner { get; }

    public Storage(Memory<byte> bytes, object? owner = null)
    {
        _bytes = bytes;
        _length = bytes.Length;
        Owner = owner;
    }

    /// <summary>
    /// Native memory of any length (a memory-mapped file). <paramref name="owner"/> keeps it valid: the storage, and
    /// every window and tensor over it, reference the owner, and the memory must live as long as the owner does.
    /// </summary>
    public Storage(byte* pointer, long byteLength, object owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentOutOfRangeException.ThrowIfNegative(byteLength);
        if (pointer == null && byteLength > 0) throw new ArgumentNullException(nameof(pointer));
        _native = pointer;
        _length = byteLength;
        Owner = owner;
    }

    /// <summary>Device memory (a device backend's allocation); the host accessors below throw for it.</summary>
    public Storage(IDeviceMemory device)
    {
        Device = device ?? throw new ArgumentNullException(nameof(device));
        _bytes = Memory<byte>.Empty;
        _length = device.Bytes;
        Owner = device;
    }

    /// <summary>The device allocation, or null for host memory.</summary>
    public IDeviceMemory? Device { get; }

    public bool IsDevice => Device is not null;

    /// <summary>Native memory (a mapping) rather than a managed array.</summary>
    public bool IsNative => _native != null;

    /// <summary>More bytes than one span holds (2^31 - 1): read it by piece (<see cref="Span(long, int)"/>, <see cref="Window"/>).</summary>
    public bool IsLarge => _length > int.MaxValue;

    private void CheckHost()
    {
        if (Device is not null) throw new InvalidOperationException(
            $"this tensor lives on {Device.Backend.Name} ({Device.Bytes} bytes of device memory) and was read on the host: an op with no CUDA path " +
            "(give the op a device path, or copy the tensor to the host with ToHost() where a host copy is meant)");
    }

    private InvalidOperationException TooLarge(string what, long count) => new(
        $"{what}: a storage of {_length} bytes ({count} elements) is more than one span holds (2^31 - 1 elements); " +
        "take a view of it first (Narrow, Select, a vocab shard), which reads only its own bytes");

    public static Storage Allocate(long byteCount)
    {
        if (byteCount > Array.MaxLength)
            throw new OutOfMemoryException(
                $"tensor of {byteCount} bytes exceeds the {Array.MaxLength}-byte limit of a managed allocation " +
                "(tensors past it come memory-mapped from a checkpoint; a copy of one must be made by piece)");
        // GC.AllocateUninitializedArray would skip zeroing; tensors created by Allocate are expected zeroed.
        return new Storage(new byte[byteCount]);
    }

    public long ByteLength => _length;

    /// <summary>All the bytes (a storage up to 2^31 - 1 bytes; see <see cref="Span(long, int)"/> past it).</summary>
    public Span<byte> Bytes
    {
        get
        {
            CheckHost();
            if (_native == null) return _bytes.Span;
            if (IsLarge) throw TooLarge("Bytes", _length);
            return new Span<byte>(_native, (int)_length);
        }
    }

    /// <summary>The bytes [byteOffset, byteOffset + length) of a storage of any size.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> Span(long byteOffset, int length)
    {
        CheckHost();
        if ((ulong)byteOffset > (ulong)_length || (ulong)length > (ulong)(_length - byteOffset))
            throw new ArgumentOutOfRangeException(nameof(byteOffset),
                $"bytes [{byteOffset}, {byteOffset + length}) outside a storage of {_length} bytes");
        return _native != null ? new Span<byte>(_native + byteOffset, length) : _bytes.Span.Slice((int)byteOffset, length);
    }

    /// <summary>Elements [elementOffset, elementOffset + count) as T, in a storage of any size: a count under 2^31 of
    /// elements wider than a byte may span more than 2^31 bytes (Gemma4-26B-A4B's tied 262144 x 2816 float32 table: 738 M
    /// elements, 2.95 GB, converted to bf16 whole for `--dtype bf16` ended in "Arithmetic operation resulted in an overflow").</summary>
    public Span<T> As<T>(long elementOffset, int count) where T : unmanaged
    {
        CheckHost();
        long byteOffset = elementOffset * sizeof(T), byteLength = (long)count * sizeof(T);
        if (elementOffset < 0 || count < 0 || byteOffset > _length || byteLength > _length - byteOffset)
            throw new ArgumentOutOfRangeException(nameof(elementOffset),
                $"elements [{elementOffset}, {elementOffset + count}) of {sizeof(T)} bytes outside a storage of {_length} bytes");
        return _native != null ? new Span<T>(_native + byteOffset, count)
            : MemoryMarshal.Cast<byte, T>(_bytes.Span.Slice((int)byteOffset, (int)byteLength));
    }

    /// <summary>The bytes [byteOffset, byteOffset + byteLength) as a storage of their own: same memory, same owner, no copy.</summary>
    public Storage Window(long byteOffset, long byteLength)
    {
        if ((ulong)byteOffset > (ulong)_length || (ulong)byteLength > (ulong)(_length - byteOffset))
            throw new ArgumentOutOfRangeException(nameof(byteOffset),
                $"window [{byteOffset}, {byteOffset + byteLength}) outside a storage of {_length} bytes");
        if (Device is not null) return new Storage(Device.Slice(byteOffset, byteLength));   // a device window: the same memory
        return _native != null
            ? new Storage(_native + byteOffset, byteLength, Owner!)
            : new Storage(_bytes.Slice((int)byteOffset, (int)byteLength), Owner ?? this);
    }

    public Memory<byte> Memory
    {
        get
        {
            CheckHost();
            if (_native == null) return _bytes;
            if (IsLarge) throw TooLarge("Memory", _length);
            return new NativeWindow(_native, (int)_length, Owner!).Memory;
        }
    }

    /// <summary>The storage reinterpreted as elements of T (no copy); up to 2^31 - 1 elements.</summary>
    public Span<T> As<T>() where T : unmanaged
    {
        CheckHost();
        if (_native == null) return MemoryMarshal.Cast<byte, T>(_bytes.Span);
        long count = _length / sizeof(T);
        if (count > int.MaxValue) throw TooLarge($"As<{typeof(T).Name}>()", count);
        return new Span<T>(_native, (int)count);
    }

    /// <summary>Pins the storage and returns a handle; the caller disposes it. Native memory needs no pinning.</summary>
    public MemoryHandle Pin()
    {
        CheckHost();
        return _native != null ? new MemoryHandle(_native) : _bytes.Pin();
    }

    /// <summary>Native bytes as Memory&lt;byte&gt; that keeps their owner reachable.</summary>
    private sealed class NativeWindow(byte* start, int length, object owner) : MemoryManager<byte>
    {
        // Referenced so that as long as a Memory<byte> over this window lives, the owner (the mapping) does too.
        private readonly object _owner = owner;

        public override Span<byte> GetSpan()
        {
            GC.KeepAlive(_owner);
            return new Span<byte>(start, length);
        }

        public override MemoryHandle Pin(int elementIndex = 0)
        {
            if ((uint)elementIndex > (uint)length) throw new ArgumentOutOfRangeException(nameof(elementIndex));
            return new MemoryHandle(start + elementIndex, default, this);
        }

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }
}
