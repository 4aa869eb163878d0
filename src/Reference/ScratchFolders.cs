using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;
using Harness.Engine.IO;

namespace Harness.Reference;

/// <summary>
/// The folders a run makes for the worker (models HF builds, checkpoint folders staged into the chroot, the sandbox's
/// scratch): each is named "PREFIX.run-PID-ID" after the process that owns it, is removed when that process releases it
/// or exits (ProcessExit: a normal end, Ctrl-C, SIGTERM), and, when the process was killed outright, by the next run
/// that makes a folder in the same place (<see cref="CleanStale"/>: every "*.run-PID-*" whose PID is gone; folders of the
/// older unmarked naming are removed once a day old). Nothing here ever crosses into another filesystem: a staged folder
/// holds hard links or copies, never mounts.
/// </summary>
public static partial class ScratchFolders
{
    private static readonly ConcurrentDictionary<string, byte> Owned = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<string, byte> Cleaned = new(StringComparer.Ordinal);
    private static int _hooked;

    [GeneratedRegex(@"\.run-(\d+)-[0-9a-f]+$")]
    private static partial Regex RunMarker();

    // The names of the earlier scheme: "PREFIX-<32 hex>".
    [GeneratedRegex(@"-[0-9a-f]{32}$")]
    private static partial Regex LegacyName();

    /// <summary>Makes a fresh folder "<paramref name="prefix"/>.run-PID-ID" in <paramref name="parent"/>, owned by this process.</summary>
    public static string Create(string parent, string prefix)
    {
        Directory.CreateDirectory(parent);
        if (Cleaned.TryAdd(Path.GetFullPath(parent), 0)) CleanStale(parent);
        HookExit();
        var dir = Path.Combine(parent, $"{Sanitize(prefix)}.run-{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        Owned[dir] = 0;
        return dir;
    }

    /// <summary>Removes a folder this process made (no-op for any other path).</summary>
    public static void Release(string dir)
    {
        if (Owned.TryRemove(dir, out _)) Delete(dir);
    }

    /// <summary>The folders this process owns now (the soak test counts them).</summary>
    public static IReadOnlyCollection<string> OwnedNow => Owned.Keys.ToList();

    /// <summary>Removes the folders of dead runs in <paramref name="parent"/>; returns how many.</summary>
    public static int CleanStale(string parent)
    {
        int removed = 0;
        IEnumerable<string> dirs;
        try { dirs = Directory.EnumerateDirectories(parent).ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return 0; }
        foreach (var dir in dirs)
        {
            var name = Path.GetFileName(dir);
            var m = RunMarker().Match(name);
            bool stale = m.Success
                ? int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && !ProcessLiveness.IsAlive(pid)
                : LegacyName().IsMatch(name) && Directory.GetLastWriteTimeUtc(dir) < DateTime.UtcNow - TimeSpan.FromDays(1);
            if (stale && Delete(dir)) removed++;
        }
        return removed;
    }

    private static string Sanitize(string prefix) =>
        string.Concat(prefix.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_')).Trim('.') is { Length: > 0 } s
            ? s[..Math.Min(s.Length, 80)] : "scratch";

    private static bool Delete(string dir)
    {
        try
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static void HookExit()
    {
        if (Interlocked.Exchange(ref _hooked, 1) == 1) return;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var dir in Owned.Keys) Release(dir);
        };
    }
}
