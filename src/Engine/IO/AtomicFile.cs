using System.Globalization;

namespace Harness.Engine.IO;

/// <summary>
/// Writes a file so that nothing half-written survives a crash: the bytes go to a temporary file beside the target
/// (".NAME.tmp-PID-RANDOM", same folder, so the rename stays on one file system; unique per write, so concurrent
/// writers never share one), are flushed to disk, and the temporary file is renamed over the target. A process killed at
/// any moment leaves the previous file intact (or none), plus at most a temporary file, which the next write into that
/// folder deletes when its process is gone.
/// <see cref="WriteAll"/> writes several files as one: it holds the folder's writer lock (".harness-writes.lock",
/// flock) from the first temporary file to the last rename, so two runs writing the same report folder leave the files
/// of one run or of the other, never a mix.
/// <c>through</c> (an explicit input, null: none) wraps the temporary file's stream: the tests pass a slow stream to kill
/// a writer mid-write or to make two writers overlap.
/// </summary>
public static class AtomicFile
{
    private const string Marker = ".tmp-";

    /// <summary>The lock file <see cref="WriteAll"/> holds in each folder it writes into.</summary>
    public const string LockFileName = ".harness-writes.lock";

    /// <summary>How long <see cref="WriteAll"/> waits for another writer of the same folder before it gives up.</summary>
    public static readonly TimeSpan DefaultLockTimeout = TimeSpan.FromMinutes(5);

    /// <summary>Writes the file through <paramref name="write"/> (which gets the temporary file's stream).</summary>
    public static void Write(string path, Action<Stream> write, Func<Stream, Stream>? through = null)
    {
        string full = Path.GetFullPath(path);
        string tmp = Stage(full, write, through);
        try
        {
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes, Func<Stream, Stream>? through = null)
    {
        var copy = bytes.ToArray();
        Write(path, s => s.Write(copy), through);
    }

    /// <summary>Copies a file atomically (the target is the old file or the whole new one, never a part).</summary>
    public static void Copy(string source, string destination)
    {
        using var from = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Write(destination, to => from.CopyTo(to, 1 << 16));
    }

    /// <summary>
    /// Several files as one: under each folder's writer lock, every temporary file is written first, then all are
    /// renamed. A crash while writing leaves all the old files; a second writer of the same folder waits for the first
    /// (up to <paramref name="lockTimeout"/>, default <see cref="DefaultLockTimeout"/>), so the files always come from one
    /// writer.
    /// </summary>
    public static void WriteAll(IReadOnlyList<(string Path, byte[] Bytes)> files, Func<Stream, Stream>? through = null, TimeSpan? lockTimeout = null)
    {
        var targets = files.Select(f => (Full: Path.GetFullPath(f.Path), f.Bytes)).ToList();
        var folders = targets.Select(t => Path.GetDirectoryName(t.Full)!).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        var locks = new List<FileStream>();
        var staged = new List<(string Tmp, string Full)>();
        try
        {
            foreach (var folder in folders) locks.Add(LockFolder(folder, lockTimeout ?? DefaultLockTimeout));   // in path order: no deadlock
            foreach (var (full, bytes) in targets) staged.Add((Stage(full, s => s.Write(bytes), through), full));
            foreach (var (tmp, full) in staged) File.Move(tmp, full, overwrite: true);
            staged.Clear();
        }
        finally
        {
            foreach (var (tmp, _) in staged) TryDelete(tmp);
            foreach (var l in locks) l.Dispose();
        }
    }

    /// <summary>Writes the bytes to a fresh temporary file beside <paramref name="full"/>, flushed to disk; returns its path.</summary>
    private static string Stage(string full, Action<Stream> write, Func<Stream, Stream>? through)
    {
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        CleanStale(dir, Path.GetFileName(full));
        string tmp = Path.Combine(dir, $".{Path.GetFileName(full)}{Marker}{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid():N}");
        try
        {
            using var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
            if (through is null) write(fs);
            else
            {
                var wrapped = through(fs);   // not disposed here: the file stream is ours to flush and close
                write(wrapped);
                wrapped.Flush();
            }
            fs.Flush(flushToDisk: true);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
        return tmp;
    }

    /// <summary>Takes the folder's writer lock (an exclusive flock on <see cref="LockFileName"/>), waiting for another holder.</summary>
    private static FileStream LockFolder(string folder, TimeSpan timeout)
    {
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, LockFileName);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            try
            {
                // FileShare.None is an exclusive, non-blocking flock on Unix (per open file, so threads of one process exclude each other too).
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1);
            }
            catch (IOException e) when (IsSharingViolation(e))
            {
                if (clock.Elapsed > timeout)
                    throw new IOException($"{folder}: another writer has held {LockFileName} for {timeout.TotalSeconds:F0} s", e);
                Thread.Sleep(20);
            }
        }
    }

    private static bool IsSharingViolation(IOException e) => e.HResult == unchecked((int)0x80070020) || e.HResult == 11 /* EWOULDBLOCK */;

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
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
            if (dash <= 0 || !int.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || ProcessLiveness.IsAlive(pid)) continue;
            TryDelete(f);
        }
    }
}

/// <summary>Whether a process id is alive (for the leftovers of dead runs: temporary files, staged model folders).</summary>
public static class ProcessLiveness
{
    /// <summary>
    /// Alive: the process exists and has not ended. A zombie (Linux state Z or X: ended, waiting for its parent to reap
    /// it) is dead: a killed run's orphaned worker stays one as long as an init that does not reap (a container's) lets it.
    /// </summary>
    public static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        if (pid <= 0) return false;
        if (OperatingSystem.IsLinux() && Directory.Exists("/proc/self"))
        {
            string stat;
            try { stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat"); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
            // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, the state follows the last ')'
            int close = stat.LastIndexOf(')');
            return close < 0 || close + 2 >= stat.Length || stat[close + 2] is not ('Z' or 'X' or 'x');
        }
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }
}
