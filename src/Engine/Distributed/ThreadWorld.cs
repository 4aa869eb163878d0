namespace Harness.Engine.Distributed;

/// <summary>
/// A world of ranks that are threads of one process, for running tensor/sequence/pipeline-parallel code without GPUs.
/// <see cref="Run(int, Action{int}, TimeSpan?)"/> starts one dedicated thread per rank and waits for all; a rank that
/// throws fails the world: every rank blocked in (or later entering) a collective is released with
/// "rank N failed: ...", and Run throws <see cref="RankFailedException"/> naming every failed rank.
/// Inside a rank's body, <see cref="Current"/> is the world, <see cref="Layout"/> builds the rank's
/// <see cref="ParallelContext"/> and <see cref="Group(int[], string)"/> makes any other group.
/// <code>
/// ThreadWorld.Run(4, rank => {
///     var ctx = ThreadWorld.Layout(rank, tpSize: 2, ppSize: 2);
///     var y = ctx.Tp.AllReduce(x);
/// }, timeout: TimeSpan.FromSeconds(1));
/// </code>
/// </summary>
public sealed class ThreadWorld
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    [ThreadStatic] private static ThreadWorld? t_world;
    [ThreadStatic] private static int t_rank;

    private sealed class RankState
    {
        public volatile string? LastCall;
        public volatile bool InCall;
        public volatile bool LastFailed;
        public volatile bool Finished;
    }

    private readonly object _gate = new();
    private readonly Dictionary<string, Rendezvous> _groups = [];
    private readonly RankState[] _ranks;
    private volatile string? _failure;
    private int _started;

    /// <param name="size">Number of ranks.</param>
    /// <param name="timeout">How long a rank waits for the others in one call before failing (default 30 s).</param>
    public ThreadWorld(int size, TimeSpan? timeout = null)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), $"a world needs at least one rank, got {size}");
        var t = timeout ?? DefaultTimeout;
        if (t <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), $"timeout must be positive, got {t}");
        Size = size;
        Timeout = t;
        _ranks = Enumerable.Range(0, size).Select(_ => new RankState()).ToArray();
    }

    public int Size { get; }

    public TimeSpan Timeout { get; }

    /// <summary>"rank 1 failed: ..." once a rank has failed (the first failure), else null.</summary>
    public string? FailureReason => _failure;

    /// <summary>The world of the calling rank thread (set by Run).</summary>
    public static ThreadWorld Current => t_world
        ?? throw new InvalidOperationException("ThreadWorld.Current is only set on a rank thread started by ThreadWorld.Run");

    /// <summary>The world rank of the calling rank thread (set by Run).</summary>
    public static int CurrentRank => t_world is null
        ? throw new InvalidOperationException("ThreadWorld.CurrentRank is only set on a rank thread started by ThreadWorld.Run")
        : t_rank;

    /// <summary>Runs body(rank) on one thread per rank of a new world; see <see cref="Run(Action{int})"/>.</summary>
    public static void Run(int worldSize, Action<int> body, TimeSpan? timeout = null) =>
        new ThreadWorld(worldSize, timeout).Run(body);

    /// <summary>Runs body(rank) on one thread per rank of a new world and returns the results by rank.</summary>
    public static T[] Run<T>(int worldSize, Func<int, T> body, TimeSpan? timeout = null) =>
        new ThreadWorld(worldSize, timeout).Run(body);

    /// <summary>The calling rank's ParallelContext in vLLM's layout (see <see cref="ParallelLayout"/>), on the current world.</summary>
    public static ParallelContext Layout(int worldRank, int tpSize, int ppSize, bool sequenceParallel = false) =>
        Current.LayoutFor(worldRank, tpSize, ppSize, sequenceParallel);

    /// <summary>Rank <paramref name="worldRank"/>'s ParallelContext in vLLM's layout; tpSize * ppSize must be the world size.</summary>
    public ParallelContext LayoutFor(int worldRank, int tpSize, int ppSize, bool sequenceParallel = false)
    {
        if (tpSize * ppSize != Size)
            throw new ArgumentException($"layout tp={tpSize} x pp={ppSize} needs {tpSize * ppSize} ranks; the world has {Size}");
        return ParallelLayout.Build(worldRank, tpSize, ppSize, sequenceParallel, (ranks, name) => Group(worldRank, ranks, name));
    }

    /// <summary>The calling rank thread's handle on the group of <paramref name="ranks"/> (see the other overload).</summary>
    public ThreadProcessGroup Group(int[] ranks, string name)
    {
        if (!ReferenceEquals(t_world, this))
            throw new InvalidOperationException($"Group({name}) without a world rank is only for rank threads of this world; pass the rank");
        return Group(t_rank, ranks, name);
    }

    /// <summary>
    /// Rank <paramref name="worldRank"/>'s handle on the group of world ranks <paramref name="ranks"/> (group rank i
    /// is ranks[i]), named "name[r0,r1,...]". Every member asks with the same ranks and name and gets a handle on the
    /// same shared state; a different name gives a separate group over the same ranks.
    /// </summary>
    public ThreadProcessGroup Group(int worldRank, int[] ranks, string name)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        ArgumentNullException.ThrowIfNull(name);
        var key = $"{name}[{string.Join(",", ranks)}]";
        if (ranks.Length == 0) throw new ArgumentException($"group {key} has no ranks");
        foreach (var r in ranks)
            if (r < 0 || r >= Size) throw new ArgumentOutOfRangeException(nameof(ranks), $"group {key}: rank {r} is not in a world of {Size}");
        if (ranks.Distinct().Count() != ranks.Length) throw new ArgumentException($"group {key} repeats a rank");
        int groupRank = Array.IndexOf(ranks, worldRank);
        if (groupRank < 0) throw new ArgumentException($"world rank {worldRank} is not a member of group {key}");
        Rendezvous rendezvous;
        lock (_gate)
        {
            if (!_groups.TryGetValue(key, out var existing)) _groups[key] = existing = new Rendezvous(this, key, (int[])ranks.Clone());
            rendezvous = existing;
        }
        return new ThreadProcessGroup(rendezvous, groupRank);
    }

    /// <summary>
    /// Fails the world on behalf of a rank: every pending and later call in every group of the world throws
    /// "rank N failed: ...". Run calls it when a body throws; code that runs ranks on its own threads may too.
    /// </summary>
    public void Abort(int worldRank, Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        lock (_gate) _failure ??= RankFailedException.Describe(worldRank, error);
        WakeAll();
    }

    /// <summary>Runs body(rank) on one dedicated thread per rank and waits for all (see the class summary).</summary>
    public void Run(Action<int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        Run<object?>(rank => { body(rank); return null; });
    }

    /// <summary>
    /// Runs body(rank) on one dedicated thread per rank, waits for all and returns their results by rank. When a rank
    /// fails, the others are released and given <see cref="Timeout"/> to finish; a rank still running after that is
    /// reported as failed too (its thread is a background thread and is left behind). A world runs once.
    /// </summary>
    public T[] Run<T>(Func<int, T> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        if (Interlocked.Exchange(ref _started, 1) != 0) throw new InvalidOperationException("a ThreadWorld runs once; create a new one");
        var results = new T[Size];
        var errors = new Exception?[Size];
        // Not disposed: a rank left running after a failure may still signal them.
        var allDone = new CountdownEvent(Size);
        var failed = new ManualResetEventSlim(false);
        var threads = new Thread[Size];
        for (int r = 0; r < Size; r++)
        {
            int rank = r;
            threads[r] = new Thread(() =>
            {
                t_world = this;
                t_rank = rank;
                try
                {
                    results[rank] = body(rank);
                }
                catch (Exception e)
                {
                    errors[rank] = e;
                    Abort(rank, e);
                    failed.Set();
                }
                finally
                {
                    _ranks[rank].Finished = true;
                    t_world = null;
                    WakeAll();
                    allDone.Signal();
                }
            })
            { IsBackground = true, Name = $"rank {rank}" };
        }
        foreach (var t in threads) t.Start();
        WaitHandle.WaitAny([allDone.WaitHandle, failed.WaitHandle]);
        if (!allDone.IsSet) allDone.Wait(Timeout);
        var failures = new List<(int, Exception)>();
        for (int r = 0; r < Size; r++)
        {
            if (!_ranks[r].Finished)
                failures.Add((r, new TimeoutException(
                    $"rank {r} did not finish within {Timeout.TotalSeconds:F1} s after {FailureReason} (its last collective: {DescribeLast(r)})")));
            else if (Volatile.Read(ref errors[r]) is { } e)
                failures.Add((r, e));
        }
        if (failures.Count > 0) throw new RankFailedException(Size, failures);
        return results;
    }

    internal bool HasFinished(int worldRank) => _ranks[worldRank].Finished;

    internal void Enter(int worldRank, string call)
    {
        _ranks[worldRank].InCall = true;
        _ranks[worldRank].LastCall = call;
    }

    internal void Leave(int worldRank, bool ok)
    {
        _ranks[worldRank].LastFailed = !ok;
        _ranks[worldRank].InCall = false;
    }

    /// <summary>"all_gather bfloat16 [2, 64] (dim 0) on tp[0,1], still waiting", "..., returned", "..., failed", or "none".</summary>
    internal string DescribeLast(int worldRank)
    {
        var s = _ranks[worldRank];
        var last = s.LastCall;
        return last is null ? "none" : $"{last}, {(s.InCall ? "still waiting" : s.LastFailed ? "failed" : "returned")}";
    }

    private void WakeAll()
    {
        Rendezvous[] groups;
        lock (_gate) groups = _groups.Values.ToArray();
        foreach (var g in groups) g.Wake();
    }
}
