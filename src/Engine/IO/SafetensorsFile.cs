using Harness.Engine.Tensors;

namespace Harness.Engine.IO;

/// <summary>
/// A safetensors file, validated on open (every rule of the format: see <see cref="SafetensorsFormatException"/>),
/// memory-mapped, with tensors handed out as zero-copy views of the mapping.
/// <para>
/// Lifetime rule: the mapping lives while this object is undisposed OR any tensor from <see cref="GetTensor"/> (or a
/// view of one) is reachable. <see cref="Dispose"/> stops further lookups; if no tensor was ever handed out it unmaps
/// at once, otherwise the mapping is released by the GC once the last such tensor is unreachable (each tensor's
/// <see cref="Storage.Owner"/> is the mapping). Tensors therefore stay valid after Dispose; call <see cref="ReadTensor"/>
/// for a managed copy when the mapping must go away deterministically.
/// </para>
/// <para>
/// The mapping is copy-on-write: writing into a returned tensor changes this process's view only, never the file.
/// </para>
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    private readonly MappedRegion _region;
    private readonly SafetensorsHeader.Parsed _header;
    private volatile bool _handedOut;
    private bool _disposed;

    /// <summary>The full path of the file.</summary>
    public string Path { get; }

    /// <summary>Bytes of JSON header (N, padding included); the data buffer starts at 8 + N.</summary>
    public long HeaderLength => _header.HeaderLength;

    public long DataOffset => 8 + _header.HeaderLength;

    /// <summary>Tensor names in header order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The "__metadata__" map (empty when the header has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _header.Metadata;

    /// <summary>Header entries in header order.</summary>
    public IReadOnlyList<TensorInfo> Tensors => _header.Tensors;

    private SafetensorsFile(string path, MappedRegion region, SafetensorsHeader.Parsed header)
    {
        Path = path;
        _region = region;
        _header = header;
        Names = header.Tensors.Select(t => t.Name).ToList();
    }

    /// <summary>Opens, validates and maps a file. Throws <see cref="SafetensorsFormatException"/> for a malformed file.</summary>
    public static SafetensorsFile Open(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        // a FIFO would block this open forever, a device fill memory: named as what it is (issue 24); a missing file
        // keeps FileStream's FileNotFoundException
        if (InputFiles.KindOf(full) is not (FileKind.Regular or FileKind.Missing)) InputFiles.RequireRegular(full, "safetensors file");
        var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1, FileOptions.RandomAccess);
        try
        {
            long length = stream.Length;
            Span<byte> prefix = stackalloc byte[8];
            int got = length >= 8 ? RandomAccess.Read(stream.SafeFileHandle, prefix, 0) : 0;
            long n = SafetensorsHeader.CheckPrefix(full, got == 8 ? prefix : default, length);
            var headerBytes = new byte[n];
            int read = 0;
            while (read < n)
            {
                int r = RandomAccess.Read(stream.SafeFileHandle, headerBytes.AsSpan(read), 8 + read);
                if (r == 0) throw new SafetensorsFormatException(full, null, $"file ended while reading the {n}-byte header");
                read += r;
            }
            var header = SafetensorsHeader.Parse(full, headerBytes, length - 8 - n);
            var region = new MappedRegion(stream, full); // takes the stream
            return new SafetensorsFile(full, region, header);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _header.ByName.ContainsKey(name);

    /// <summary>The header entry of a tensor; <see cref="TensorNotFoundException"/> (listing near names) when absent.</summary>
    public TensorInfo GetInfo(string name)
    {
        if (_header.ByName.TryGetValue(name, out var info)) return info;
        throw new TensorNotFoundException(Path, name, NearNames.Find(name, Names), Names.Count);
    }

    public bool TryGetInfo(string name, out TensorInfo info) => _header.ByName.TryGetValue(name, out info!);

    /// <summary>A zero-copy view of the tensor's bytes in the mapping, of any size (see the lifetime rule on the class).</summary>
    public Tensor GetTensor(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = GetInfo(name);
        _handedOut = true;
        return Tensor.FromStorage(_region.Storage(DataOffset + info.Begin, info.ByteLength), info.DType, (int[])info.Shape.Clone());
    }

    /// <summary>
    /// Rows [start, start + length) of dim 0 (a rank's shard of a vocab table, a slice of a stacked weight): a zero-copy
    /// view whose storage is only those rows' bytes of the mapping; nothing else of the tensor is touched.
    /// </summary>
    public Tensor GetRows(string name, int start, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = GetInfo(name);
        if (info.Shape.Length == 0)
            throw new ArgumentException($"{Path}: tensor '{name}' is a scalar; it has no rows to take [{start}, {start + length}) of");
        int rows = info.Shape[0];
        if (start < 0 || length < 0 || start > rows - length)
            throw new ArgumentOutOfRangeException(nameof(start),
                $"{Path}: rows [{start}, {start + length}) of tensor '{name}' {Harness.Engine.Tensors.Shape.Format(info.Shape)} are outside its {rows} rows");
        long rowBytes = rows == 0 ? 0 : info.ByteLength / rows;
        var shape = (int[])info.Shape.Clone();
        shape[0] = length;
        _handedOut = true;
        return Tensor.FromStorage(_region.Storage(DataOffset + info.Begin + start * rowBytes, length * rowBytes), info.DType, shape);
    }

    /// <summary>A copy of the tensor in managed memory: independent of the mapping's lifetime.</summary>
    public Tensor ReadTensor(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = GetInfo(name);
        var t = Tensor.Zeros(info.DType, info.Shape);   // a managed array: up to Array.MaxLength bytes (a clear error past it)
        _region.Span(DataOffset + info.Begin, (int)info.ByteLength).CopyTo(t.Storage.Bytes);
        return t;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!_handedOut) _region.Dispose();
    }

    public override string ToString() => $"SafetensorsFile({Path}, {Names.Count} tensors)";
}
