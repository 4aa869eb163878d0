using Harness.Engine.Capture;
using Harness.Engine.Tensors;

namespace Harness.Runs;

/// <summary>
/// Collects the engine's module outputs for one run, for <see cref="LayerComparison"/>. Engine code calls
/// <see cref="Record"/> from any rank (any thread); a module may be recorded by several ranks, each with its own
/// <see cref="ShardSpec"/>. Records snapshot the tensor (a contiguous copy), since engines reuse buffers.
/// Cheap when off: <see cref="Record"/> returns before copying anything when capture is disabled or the module is
/// filtered out, and <see cref="Wants"/> lets a caller skip preparing a tensor (e.g. a gather) that would not be kept.
/// </summary>
public sealed class ActivationCapture
{
    private readonly object _gate = new();
    private readonly List<CapturedActivation> _records = [];
    private readonly HashSet<string>? _only;
    private long _sequence;

    /// <summary>A capture of every module, or only of the named ones.</summary>
    public ActivationCapture(IEnumerable<string>? onlyModules = null, bool enabled = true)
    {
        _only = onlyModules is null ? null : new HashSet<string>(onlyModules, StringComparer.Ordinal);
        Enabled = enabled;
    }

    /// <summary>A capture that records nothing (for runs that compare nothing).</summary>
    public static ActivationCapture Disabled() => new(enabled: false);

    /// <summary>Off: every <see cref="Record"/> is a no-op. May be switched while a run goes on (e.g. prefill only).</summary>
    public bool Enabled { get; set; }

    /// <summary>The module filter, null when every module is kept.</summary>
    public IReadOnlySet<string>? OnlyModules => _only;

    /// <summary>Whether a record of this module would be kept now.</summary>
    public bool Wants(string module) => Enabled && (_only is null || _only.Contains(module));

    /// <summary>
    /// Records a module's output as rank <paramref name="rank"/> holds it. When rank is not given it is the shard's rank
    /// for <see cref="ShardSpec.Sharded"/> and 0 otherwise, so SP ranks (<see cref="ShardSpec.Rows"/>) should pass it.
    /// </summary>
    public void Record(string module, Tensor value, ShardSpec shard, int? rank = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(shard);
        if (!Wants(module)) return;
        var snapshot = value.Clone();
        int r = rank ?? (shard is ShardSpec.Sharded s ? s.Rank : 0);
        lock (_gate)
            _records.Add(new CapturedActivation(module, snapshot, shard) { Rank = r, Sequence = _sequence++ });
    }

    /// <summary>A snapshot of the records so far, in arrival order.</summary>
    public IReadOnlyList<CapturedActivation> Records
    {
        get { lock (_gate) return _records.ToArray(); }
    }

    /// <summary>The records of one module, by rank then arrival.</summary>
    public IReadOnlyList<CapturedActivation> For(string module)
    {
        lock (_gate)
            return _records.Where(r => r.Module == module).OrderBy(r => r.Rank).ThenBy(r => r.Sequence).ToArray();
    }

    public int Count
    {
        get { lock (_gate) return _records.Count; }
    }

    /// <summary>Drops the records that match (e.g. those after an engine failure; see EngineFailures.Settle).</summary>
    public int RemoveWhere(Func<CapturedActivation, bool> match)
    {
        lock (_gate) return _records.RemoveAll(r => match(r));
    }

    /// <summary>Drops every record (e.g. between prompts).</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _records.Clear();
            _sequence = 0;
        }
    }
}
