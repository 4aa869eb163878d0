using System.Buffers;
using System.IO.MemoryMappedFiles;

namespace Harness.Engine.IO;

/// <summary>
/// A whole file mapped copy-on-write: reads come straight from the page cache; a write through a tensor view
/// lands in a private page and never reaches the file (so a stray in-place op cannot corrupt a checkpoint, nor crash
/// on a read-only page). The mapping is released by <see cref="Dispose"/> or, failing that, by the finalizer once
/// nothing (no <see cref="SafetensorsFile"/>, no tensor storage) references this object.
/// </summary>
internal sealed unsafe class MappedRegion : IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private int _released;

    public string Path { get; }
    public long Length { get; }

    public MappedRegion(FileStream stream, string path)
    {
        Path = path;
        Length = stream.Length;
        _file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.CopyOnWrite,
            HandleInheritability.None, leaveOpen: false);
        try
        {
            _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.CopyOnWrite);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
        }
        catch
        {
            _view?.Dispose();
            _file.Dispose();
            throw;
        }
    }

    public bool IsReleased => Volatile.Read(ref _released) != 0;

    /// <summary>A zero-copy window [offset, offset + length) of the file; the window keeps this region alive.</summary>
    public Memory<byte> Slice(long offset, int length)
    {
        if (IsReleased) throw new ObjectDisposedException(Path, "the file mapping was released");
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"window [{offset}, {offset + length}) outside {Length} mapped bytes of {Path}");
        if (length == 0) return Memory<byte>.Empty;
        return new Window(this, _base + offset, length).Memory;
    }

    public ReadOnlySpan<byte> Span(long offset, int length) => new(_base + offset, length);

    public void Dispose()
    {
        Release();
        GC.SuppressFinalize(this);
    }

    ~MappedRegion() => Release();

    private void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0) return;
        // SafeHandles are critically finalized, i.e. after this finalizer: they are still usable here.
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }

    /// <summary>A MemoryManager over mapped bytes: Memory&lt;byte&gt; that keeps the region reachable.</summary>
    private sealed class Window(MappedRegion region, byte* start, int length) : MemoryManager<byte>
    {
        // Referenced so that as long as a Memory<byte> over this window lives, the mapping does too.
        private readonly MappedRegion _region = region;

        public override Span<byte> GetSpan()
        {
            if (_region.IsReleased) throw new ObjectDisposedException(_region.Path, "the file mapping was released");
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
