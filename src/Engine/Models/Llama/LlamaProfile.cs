using System.Diagnostics;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// Opt-in per-module wall time of the Llama forward on this thread (`harness bench --profile`): the linear layers, the
/// attention core, the norms and the activation, summed over layers until <see cref="Stop"/>. Off: one flag check per
/// module.
/// </summary>
public static class LlamaProfile
{
    [ThreadStatic] private static Dictionary<string, long>? _ticks;

    public static bool Enabled => _ticks is not null;

    public static void Start() => _ticks = new Dictionary<string, long>();

    /// <summary>Milliseconds per module since <see cref="Start"/>, and stops.</summary>
    public static IReadOnlyDictionary<string, double> Stop()
    {
        var t = _ticks ?? new Dictionary<string, long>();
        _ticks = null;
        return t.ToDictionary(kv => kv.Key, kv => kv.Value * 1e3 / Stopwatch.Frequency);
    }

    internal static long Now() => _ticks is null ? 0 : Stopwatch.GetTimestamp();

    internal static void Add(string module, long start)
    {
        if (_ticks is null) return;
        long d = Stopwatch.GetTimestamp() - start;
        _ticks[module] = _ticks.GetValueOrDefault(module) + d;
    }
}
