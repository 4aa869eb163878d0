namespace Harness.Engine.Runtime;

/// <summary>
/// Named faults that re-create a known bug inside the engine, so a scenario can prove its check fails
/// when the bug is present. Each name is one real bug; none is active unless a test or the CLI injects it.
/// </summary>
public static class Faults
{
    /// <summary>
    /// The batch-invariant matmul without its ND x ND path: only 2D x 2D, 3D x 3D, ND x 2D and 2D x ND are accepted,
    /// as in vLLM before the Gemma4-E2B fix, so a 4D x 3D product fails with a shape error.
    /// </summary>
    public const string MatmulNoNdBroadcast = "matmul-no-nd-broadcast";

    /// <summary>Every fault the engine knows, with what it re-creates.</summary>
    public static readonly IReadOnlyDictionary<string, string> Known = new Dictionary<string, string>
    {
        [MatmulNoNdBroadcast] = "batch-invariant matmul rejects ND x ND with broadcast batch dims (vLLM before the Gemma4-E2B fix)",
    };

    private static readonly AsyncLocal<HashSet<string>?> _active = new();

    public static bool IsActive(string name) => _active.Value?.Contains(name) ?? false;

    /// <summary>Activates a fault for the current flow until the scope is disposed; an unknown name lists the known ones.</summary>
    public static IDisposable Inject(string name)
    {
        if (!Known.ContainsKey(name))
            throw new ArgumentException($"unknown fault '{name}'; known faults: {string.Join(", ", Known.Keys.Order())}", nameof(name));
        var previous = _active.Value;
        var next = previous is null ? new HashSet<string>() : new HashSet<string>(previous);
        next.Add(name);
        _active.Value = next;
        return new Scope(previous);
    }

    private sealed class Scope(HashSet<string>? previous) : IDisposable
    {
        public void Dispose() => _active.Value = previous;
    }
}
