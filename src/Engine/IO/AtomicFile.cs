using System.Globalization;

namespace Harness.Engine.IO;

/// <summary>
/// Writes a file so that nothing half-written survives a crash: the bytes go to a temporary file beside the target
/// (".NAME.tmp-PID-RANDOM", same folder, so the rename stays on one file system), are flushed to disk, and the temporary
/// file is renamed over the target. A process killed at any moment leaves the previous file intact (or none), plus at
/// most a temporary file, which the next write into that folder deletes when its process is gone.
/// Test hook: HARNESS_SLOW_WRITES_MS=N sleeps N ms after each 4 KiB written, so a test can kill the process mid-write.
/// </summary>
public static class AtomicFile
{
    private const string Marker = ".tmp-";

    /// <summary>Writes the file through <paramref name="write"/> (which gets the temporary file's stream).</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        CleanStale(dir, Path.GetFileName(full));
        string tmp = Path.Combine(dir, $".{Path.GetFileName(full)}{Marker}{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid().ToString("N")[..8]}");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                int slow = SlowWritesMs;
                write(slow > 0 ? new SlowStream(fs, slow) : fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        Write(path, s => s.Write(copy));
    }

    /// <summary>Copies a file atomically (the target is the old file or the whole new one, never a part).</summary>
    public static void Copy(string source, string destination)
    {
        using var from = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Write(destination, to => from.CopyTo(to, 1 << 16));
    }

    /// <summary>Several files at once: every temporary file is written first, then all are renamed (a crash while writing leaves all the old ones).</summary>
    public static void WriteAll(IReadOnlyList<(string Path, byte[] Bytes)> files)
    {
        var staged = new List<(string Tmp, string Full)>();
        try
        {
            foreach (var (path, bytes) in files)
            {
                string full = Path.GetFullPath(path);
                string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.staged");
                Write(tmp, s => s.Write(bytes));   // the staged copy is itself written atomically
                staged.Add((tmp, full));
            }
            foreach (var (tmp, full) in staged) File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            foreach (var (tmp, _) in staged)
                try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Deletes the temporary files of earlier writes to <paramref name="name"/> whose process is gone.</summary>
    public static void CleanStale(string directory, string name)
    {
        string prefix = $".{name}{Marker}";
        IEnumerable<string> leftovers;
        try
        {
            leftovers = Directory.EnumerateFiles(directory, prefix + "*").ToList();
        }
        catch (IOException) { return; }
        foreach (var f in leftovers)
        {
            var rest = Path.GetFileName(f)[prefix.Length..];
            int dash = rest.IndexOf('-');
            if (dash <= 0 || !int.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || IsAlive(pid)) continue;
            try { File.Delete(f); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    private static int SlowWritesMs =>
        int.TryParse(Environment.GetEnvironmentVariable("HARNESS_SLOW_WRITES_MS"), NumberStyles.None, CultureInfo.InvariantCulture, out int ms) ? ms : 0;

    /// <summary>The test hook's stream: writes in 4 KiB pieces with a sleep after each.</summary>
    private sealed class SlowStream(Stream inner, int sleepMs) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            while (buffer.Length > 0)
            {
                int n = Math.Min(4096, buffer.Length);
                inner.Write(buffer[..n]);
                inner.Flush();
                buffer = buffer[n..];
                Thread.Sleep(sleepMs);
            }
        }
    }
}
