namespace Harness.Engine.IO;

/// <summary>What a path names, symbolic links followed (<see cref="InputFiles.KindOf"/>).</summary>
public enum FileKind { Missing, Regular, Directory, Fifo, CharacterDevice, BlockDevice, Socket, SymlinkLoop, Unreadable }

/// <summary>
/// The files a user hands us (config.json, report.json, an index, weights) are read only when they are regular files:
/// a FIFO would block the read forever, /dev/zero would fill memory, a symbolic-link loop would throw an IOException
/// without a name. Each is an <see cref="InputException"/> naming the path and what it is instead. JSON inputs are read
/// whole only below a size cap (<see cref="ReadCapped"/>).
/// </summary>
public static class InputFiles
{
    /// <summary>config.json and model.safetensors.index.json: real ones are below 1 MiB.</summary>
    public const long ConfigMaxBytes = 16L << 20;

    /// <summary>report.json: the nightly's is a few MiB.</summary>
    public const long ReportMaxBytes = 512L << 20;

    /// <summary>A record another tool wrote whole as JSON, tensors and all (transformers' model debugger's
    /// *_debug_tree_FULL_TENSORS.json): what one string of JSON text may hold.</summary>
    public const long RecordMaxBytes = 1L << 30;

    public static FileKind KindOf(string path) => Stat(path).Kind;

    private static (FileKind Kind, long Size, string? Error) Stat(string path)
    {
        var (errno, mode, size) = Libc.Stat(path);
        if (errno < 0)
        {
            // no statx: what .NET can tell (FIFOs and devices show as files)
            if (Directory.Exists(path)) return (FileKind.Directory, 0, null);
            return File.Exists(path) ? (FileKind.Regular, new FileInfo(path).Length, null) : (FileKind.Missing, 0, null);
        }
        if (errno != 0)
            return errno switch
            {
                Libc.ENOENT or Libc.ENOTDIR => (FileKind.Missing, 0, null),
                Libc.ELOOP => (FileKind.SymlinkLoop, 0, null),
                _ => (FileKind.Unreadable, 0, Libc.Describe(errno)),
            };
        return (mode & 0xF000) switch
        {
            0x8000 => (FileKind.Regular, size, null),
            0x4000 => (FileKind.Directory, 0, null),
            0x1000 => (FileKind.Fifo, 0, null),
            0x2000 => (FileKind.CharacterDevice, 0, null),
            0x6000 => (FileKind.BlockDevice, 0, null),
            0xC000 => (FileKind.Socket, 0, null),
            _ => (FileKind.Unreadable, 0, $"unknown file type {mode:o}"),
        };
    }

    /// <summary>"a FIFO (named pipe)", "a character device", ... for messages.</summary>
    public static string Describe(FileKind kind) => kind switch
    {
        FileKind.Missing => "missing",
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a folder",
        FileKind.Fifo => "a FIFO (named pipe)",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        FileKind.SymlinkLoop => "a loop of symbolic links",
        _ => "unreadable",
    };

    /// <summary>
    /// The path must name a regular file (through any symbolic links); returns its size. Otherwise an <see cref="InputException"/>
    /// "PATH: is a FIFO (named pipe), not a regular file" (or a missing file, a loop of links, a device, a folder).
    /// </summary>
    public static long RequireRegular(string path, string what = "file")
    {
        var (kind, size, error) = Stat(path);
        return kind switch
        {
            FileKind.Regular => size,
            FileKind.Missing => throw new InputException(path, IsDanglingLink(path) ? $"the {what} is a symbolic link to a missing file" : $"no such {what}"),
            FileKind.Unreadable => throw new InputException(path, $"cannot read the {what}: {error}"),
            _ => throw new InputException(path, $"is {Describe(kind)}, not a regular file"),
        };
    }

    private static bool IsDanglingLink(string path)
    {
        try { return new FileInfo(path).LinkTarget is not null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { return false; }
    }

    /// <summary>Reads a regular file whole when it is at most <paramref name="maxBytes"/> long (else an input error naming the size and the cap).</summary>
    public static byte[] ReadCapped(string path, long maxBytes, string what = "file")
    {
        long size = RequireRegular(path, what);
        if (size > maxBytes) throw new InputException(path, $"is {size:N0} bytes; a {what} may be at most {maxBytes:N0}");
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            // Read at most maxBytes + 1 whatever the size said (a file that grows while it is read is still capped).
            var bytes = new MemoryStream((int)Math.Min(size, maxBytes));
            var chunk = new byte[1 << 16];
            int n;
            while ((n = fs.Read(chunk, 0, (int)Math.Min(chunk.Length, maxBytes + 1 - bytes.Length))) > 0)
            {
                bytes.Write(chunk, 0, n);
                if (bytes.Length > maxBytes) throw new InputException(path, $"is more than {maxBytes:N0} bytes, the limit for a {what}");
            }
            return bytes.ToArray();
        }
        catch (UnauthorizedAccessException e)
        {
            throw new InputException(path, $"cannot read the {what}: {e.Message}", e);
        }
        catch (IOException e) when (e is not FileNotFoundException)
        {
            throw new InputException(path, $"cannot read the {what}: {e.Message}", e);
        }
    }
}
