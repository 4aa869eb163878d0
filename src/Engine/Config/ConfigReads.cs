using System.Collections.Concurrent;

namespace Harness.Engine.Config;

/// <summary>
/// Which fields of a config file the engine read: the config-field mutation check (`harness run --config-mutations`)
/// watches the engine's copy of a config.json while a scenario runs, then changes each field read, one at a time, to
/// prove some scenario can see it. Observation only: nothing here changes what a read returns. Every typed getter of
/// <see cref="ConfigNode"/> records its dotted path ("rope_parameters.rope_theta", "text_config.hidden_size").
/// </summary>
public static class ConfigReads
{
    private static readonly ConcurrentDictionary<string, ConcurrentDictionary<string, byte>> Watched = new(StringComparer.Ordinal);

    /// <summary>Records reads of the config file at <paramref name="path"/> until the returned scope is disposed.</summary>
    public static Watch Start(string path)
    {
        var full = Path.GetFullPath(path);
        var fields = new ConcurrentDictionary<string, byte>(StringComparer.Ordinal);
        if (!Watched.TryAdd(full, fields)) throw new InvalidOperationException($"reads of {full} are already being watched");
        return new Watch(full, fields);
    }

    private static readonly AsyncLocal<bool> Validating = new();

    /// <summary>
    /// Runs a parse-time check of fields that are read when first used: a malformed value still fails at load, naming the
    /// field, but the check does not count as the engine reading it.
    /// </summary>
    public static void Validate(Action check)
    {
        bool previous = Validating.Value;
        Validating.Value = true;
        try { check(); }
        finally { Validating.Value = previous; }
    }

    internal static void Record(string sourceName, string path)
    {
        if (Watched.IsEmpty || sourceName.Length == 0 || Validating.Value) return;
        if (Watched.TryGetValue(Path.GetFullPath(sourceName), out var fields)) fields.TryAdd(path, 0);
    }

    /// <summary>A watch on one config file; <see cref="Fields"/> are the dotted paths read so far, in ordinal order.</summary>
    public sealed class Watch(string path, ConcurrentDictionary<string, byte> fields) : IDisposable
    {
        public string Path { get; } = path;
        public IReadOnlyList<string> Fields => fields.Keys.Order(StringComparer.Ordinal).ToList();
        public void Dispose() => Watched.TryRemove(Path, out _);
    }
}
