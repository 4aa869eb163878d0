using Harness.Engine.Tensors;
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

    /// <summary>
    /// A zero-copy storage over bytes [offset, offset + length) of the file, of any length; the storage keeps this
    /// region alive (it is the storage's owner).
    /// </summary>
    public Storage Storage(long offset, long length)
    {
        if (IsReleased) throw new ObjectDisposedException(Path, "the file mapping was released");
        if (offset < 0 || length < 0 || offset > Length - length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"window [{offset}, {offset + length}) outside {Length} mapped bytes of {Path}");
        return new Storage(_base + offset, length, this);
    }

    /// <summary>Bytes [offset, offset + length) of the mapping, read in place.</summary>
    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (IsReleased) throw new ObjectDisposedException(Path, "the file mapping was released");
        if (offset < 0 || length < 0 || offset > Length - length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"bytes [{offset}, {offset + length}) outside {Length} mapped bytes of {Path}");
        return new(_base + offset, length);
    }

    /// <summary>
    /// Gives back the resident pages under <paramref name="t"/>'s elements when it is a view of a mapped file (nothing
    /// otherwise): MADV_DONTNEED on the whole pages inside the elements' byte span, so a weight packed into its own copy
    /// (<see cref="Layers.Linear"/>) no longer counts twice in the process's memory. The bytes stay readable: a later read
    /// maps the file's page again, with the same values (the checkpoint is never written; a page written through a view, a
    /// private copy, would revert to the file's bytes, which is why only weights read for packing are given back). The
    /// pages at either end, shared with the neighbouring tensors, are kept.
    /// </summary>
    /// <returns>The bytes given back (0 for a tensor that is not a mapped view or spans no whole page).</returns>
    public static long ReleaseResident(Tensors.Tensor t)
    {
        if (t.Storage.Owner is not MappedRegion region || region.IsReleased || t.ElementCount == 0 || !t.Storage.IsNative) return 0;
        long last = t.Offset;                                       // the span [first, last] of elements t reaches
        for (int d = 0; d < t.Rank; d++)
        {
            if (t.Strides[d] < 0) return 0;
            last += (long)(t.Shape[d] - 1) * t.Strides[d];
        }
        int size = t.DType.Size();
        using var pin = t.Storage.Pin();
        long start = (long)pin.Pointer + (long)t.Offset * size, end = (long)pin.Pointer + (last + 1) * size;
        long page = Environment.SystemPageSize;
        long from = (start + page - 1) / page * page, to = end / page * page;
        if (to <= from) return 0;
        int errno = Libc.Madvise((void*)from, (nuint)(to - from), Libc.MadvDontNeed);
        // advice only: where it is refused the pages stay resident, as before (the values are the same either way)
        return errno == 0 ? to - from : 0;
    }

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
}

/// <summary>
/// The pages of a memory-mapped checkpoint under a weight, given back once a copy of the weight is the one in use (a packed
/// copy, a converted one, a device copy: <see cref="MappedRegion.ReleaseResident"/>); for weight sources outside the engine.
/// </summary>
public static class MappedPages
{
    /// <returns>The bytes given back (0 for a tensor that is not a view of a mapped file).</returns>
    public static long Release(Tensors.Tensor t) => MappedRegion.ReleaseResident(t);
}
