using System.Diagnostics;
using Harness.Engine.Tensors;

namespace Harness.Engine.Distributed;

/// <summary>
/// The state one group of a <see cref="ThreadWorld"/> shares between its ranks' threads: a numbered round per
/// collective (each rank's k-th collective on the group joins round k) and a FIFO mailbox per (src, dst) pair.
/// A rank posts its call and input into its round; the last to arrive checks that all calls agree and computes the
/// shared result (outside the lock); then each rank copies its part out. Waiting is bounded: a world failure releases
/// waiters at once, a missing rank that has finished fails them at once, otherwise they fail after the world's timeout.
/// One lock per group, so groups used concurrently by different subsets of ranks do not interfere.
/// </summary>
internal sealed class Rendezvous(ThreadWorld world, string name, int[] worldRanks)
{
    private readonly object _gate = new();
    private readonly long[] _nextRound = new long[worldRanks.Length];
    private readonly CollectiveCall?[] _inProgress = new CollectiveCall?[worldRanks.Length];
    private readonly Dictionary<long, Round> _rounds = [];
    private readonly Queue<Letter>[] _mail = Enumerable.Range(0, worldRanks.Length * worldRanks.Length).Select(_ => new Queue<Letter>()).ToArray();
    private string? _broken;

    public string Name { get; } = name;
    public int Size => worldRanks.Length;
    public IReadOnlyList<int> WorldRanks => worldRanks;
    public ThreadWorld World => world;

    private sealed class Round(int n)
    {
        public readonly CollectiveCall?[] Calls = new CollectiveCall?[n];
        public readonly Tensor?[] Inputs = new Tensor?[n];
        public int Arrived, Departed;
        public bool Done;
        public Tensor? Result;
        /// <summary>Per rank, so that a mismatch reads from each rank's side.</summary>
        public CollectiveException?[]? Errors;
    }

    private sealed class Letter(Tensor tensor)
    {
        public Tensor Tensor { get; } = tensor;
        public bool Taken;
    }

    /// <summary>Wakes every waiter to re-check the world's state (a rank failed or finished).</summary>
    public void Wake()
    {
        lock (_gate) Monitor.PulseAll(_gate);
    }

    /// <summary>Runs one collective for group rank <paramref name="rank"/>; returns the shared result (null for barrier).</summary>
    /// <param name="compute">What the last arriver computes from the agreeing calls and every rank's input (default
    /// <see cref="CollectiveMath.Compute"/>); a device group passes one that only validates and leaves the arithmetic to
    /// each rank's stream.</param>
    public Tensor? Collective(int rank, CollectiveCall call, Tensor? input, Func<CollectiveCall, IReadOnlyList<Tensor?>, Tensor?>? compute = null)
    {
        Begin(rank, call, collective: true);
        bool ok = false;
        try
        {
            var clock = Stopwatch.StartNew();
            Round round;
            long id;
            bool last;
            lock (_gate)
            {
                id = _nextRound[rank]++;
                if (!_rounds.TryGetValue(id, out var r)) _rounds[id] = r = new Round(Size);
                round = r;
                round.Calls[rank] = call;
                round.Inputs[rank] = input;
                last = ++round.Arrived == Size;
            }
            if (last) Complete(round, compute);
            lock (_gate)
            {
                while (!round.Done)
                {
                    if (round.Arrived < Size) ThrowIfReleased(rank, call, round, clock.Elapsed);
                    var wait = round.Arrived < Size ? Remaining(clock.Elapsed) : Timeout.InfiniteTimeSpan;
                    Monitor.Wait(_gate, wait);
                }
                if (++round.Departed == Size) _rounds.Remove(id);
                if (round.Errors?[rank] is { } e) throw e;
                ok = true;
                return round.Result;
            }
        }
        finally
        {
            End(rank, ok);
        }
    }

    /// <summary>Posts a copy of t to dst's mailbox and blocks until dst has taken it.</summary>
    /// <param name="clone">How the letter's copy is made (default <see cref="Tensor.Clone"/>; a device group's copy records
    /// an event the receiver's stream waits on).</param>
    public void Send(int rank, int dst, Tensor t, Func<Tensor, Tensor>? clone = null)
    {
        var call = CollectiveCall.On(CollectiveOp.Send, t, peer: dst);
        CheckPeer(rank, dst, call);
        Begin(rank, call, collective: false);
        bool ok = false;
        try
        {
            var clock = Stopwatch.StartNew();
            var letter = new Letter(clone is null ? t.Clone() : clone(t));
            lock (_gate)
            {
                var box = _mail[rank * Size + dst];
                box.Enqueue(letter);
                Monitor.PulseAll(_gate);
                while (!letter.Taken)
                {
                    var why = ReleaseReason(rank, call, clock.Elapsed, dst,
                        finished: "returned from its body without receiving it", late: "did not receive it");
                    if (why is not null)
                    {
                        var rest = box.Where(l => l != letter).ToArray();
                        box.Clear();
                        foreach (var l in rest) box.Enqueue(l);
                        throw why;
                    }
                    Monitor.Wait(_gate, Remaining(clock.Elapsed));
                }
            }
            ok = true;
        }
        finally
        {
            End(rank, ok);
        }
    }

    /// <summary>Takes the oldest tensor src sent to this rank, waiting for it if none is there yet.</summary>
    public Tensor Recv(int rank, int src)
    {
        var call = new CollectiveCall(CollectiveOp.Recv, Peer: src);
        CheckPeer(rank, src, call);
        Begin(rank, call, collective: false);
        bool ok = false;
        try
        {
            var clock = Stopwatch.StartNew();
            lock (_gate)
            {
                var box = _mail[src * Size + rank];
                while (box.Count == 0)
                {
                    var why = ReleaseReason(rank, call, clock.Elapsed, src,
                        finished: "returned from its body without sending", late: "sent nothing");
                    if (why is not null) throw why;
                    Monitor.Wait(_gate, Remaining(clock.Elapsed));
                }
                var letter = box.Dequeue();
                letter.Taken = true;
                Monitor.PulseAll(_gate);
                ok = true;
                return letter.Tensor;
            }
        }
        finally
        {
            End(rank, ok);
        }
    }

    /// <summary>The last arriver: check agreement, compute, publish.</summary>
    private void Complete(Round round, Func<CollectiveCall, IReadOnlyList<Tensor?>, Tensor?>? compute)
    {
        var calls = round.Calls.Select(c => c!).ToArray();
        Tensor? result = null;
        CollectiveException?[]? errors = null;
        if (calls.Any(c => !c.Agrees(calls[0])))
        {
            errors = Enumerable.Range(0, Size).Select(r =>
                (CollectiveException?)new CollectiveException(CollectiveFailure.Mismatch, $"{Name}: collective mismatch: {DescribeMismatch(r, calls)}")).ToArray();
        }
        else
        {
            try
            {
                result = compute is null ? CollectiveMath.Compute(Name, calls[0], round.Inputs) : compute(calls[0], round.Inputs);
            }
            catch (Exception e)
            {
                var ce = e as CollectiveException
                    ?? new CollectiveException(CollectiveFailure.InvalidArgument, $"{Name}: {calls[0]} failed: {e.Message}", e);
                errors = Enumerable.Repeat((CollectiveException?)ce, Size).ToArray();
            }
        }
        lock (_gate)
        {
            Array.Clear(round.Inputs);
            round.Result = result;
            round.Errors = errors;
            round.Done = true;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>"rank 1 called all_gather ... while rank 0 called all_reduce ..." from rank <paramref name="me"/>'s side.</summary>
    private string DescribeMismatch(int me, CollectiveCall[] calls)
    {
        var groups = Enumerable.Range(0, Size)
            .GroupBy(r => calls[r].ToString())
            .OrderBy(g => g.Contains(me) ? 0 : 1).ThenBy(g => g.First())
            .Select(g => $"{(g.Count() == 1 ? Who(g.First()) : "ranks " + string.Join(", ", g))} called {g.Key}")
            .ToArray();
        return groups[0] + " while " + string.Join("; ", groups.Skip(1));
    }

    private void ThrowIfReleased(int rank, CollectiveCall call, Round round, TimeSpan elapsed)
    {
        if (world.FailureReason is { } failed)
            throw new CollectiveException(CollectiveFailure.PeerFailed, $"{Name}: {Who(rank)} released from {call}: {failed}");
        if (_broken is { } broken)
            throw new CollectiveException(CollectiveFailure.Broken, $"{Name}: {Who(rank)} released from {call}: {broken}");
        var missing = Enumerable.Range(0, Size).Where(r => round.Calls[r] is null).ToArray();
        bool anyFinished = missing.Any(r => world.HasFinished(worldRanks[r]));
        if (!anyFinished && elapsed < world.Timeout) return;
        var message = $"{Who(rank)} waited {elapsed.TotalSeconds:F1} s in {call}; " + string.Join("; ", missing.Select(r =>
            $"{Who(r)} never arrived ({(world.HasFinished(worldRanks[r]) ? "it returned from its body; " : "")}its last collective: {world.DescribeLast(worldRanks[r])})"));
        _broken = message;
        Monitor.PulseAll(_gate);
        throw new CollectiveException(CollectiveFailure.Timeout, $"{Name}: {message}");
    }

    private CollectiveException? ReleaseReason(int rank, CollectiveCall call, TimeSpan elapsed, int peer, string finished, string late)
    {
        if (world.FailureReason is { } failed)
            return new CollectiveException(CollectiveFailure.PeerFailed, $"{Name}: {Who(rank)} released from {call}: {failed}");
        bool done = world.HasFinished(worldRanks[peer]);
        if (!done && elapsed < world.Timeout) return null;
        return new CollectiveException(CollectiveFailure.Timeout,
            $"{Name}: {Who(rank)} waited {elapsed.TotalSeconds:F1} s in {call}; {Who(peer)} {(done ? finished : late)} (its last collective: {world.DescribeLast(worldRanks[peer])})");
    }

    private void Begin(int rank, CollectiveCall call, bool collective)
    {
        lock (_gate)
        {
            if (_inProgress[rank] is { } other)
                throw new InvalidOperationException(
                    $"{Name}: {Who(rank)} called {call} while its {other} on this group is still in progress (one rank used from two threads?)");
            if (world.FailureReason is { } failed)
                throw new CollectiveException(CollectiveFailure.PeerFailed, $"{Name}: {Who(rank)} cannot start {call}: {failed}");
            if (collective && _broken is { } broken)
                throw new CollectiveException(CollectiveFailure.Broken, $"{Name}: {Who(rank)} cannot start {call}: the group is broken by an earlier timeout: {broken}");
            _inProgress[rank] = call;
        }
        world.Enter(worldRanks[rank], $"{call} on {Name}");
    }

    private void End(int rank, bool ok)
    {
        lock (_gate) _inProgress[rank] = null;
        world.Leave(worldRanks[rank], ok);
    }

    private void CheckPeer(int rank, int peer, CollectiveCall call)
    {
        if (peer < 0 || peer >= Size)
            throw new CollectiveException(CollectiveFailure.InvalidArgument, $"{Name}: {Who(rank)} {call}: rank {peer} is not in a group of {Size}");
        if (peer == rank)
            throw new CollectiveException(CollectiveFailure.InvalidArgument, $"{Name}: {Who(rank)} {call}: a rank cannot {(call.Op == CollectiveOp.Send ? "send to" : "receive from")} itself");
    }

    private TimeSpan Remaining(TimeSpan elapsed)
    {
        var left = world.Timeout - elapsed;
        return left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1);
    }

    /// <summary>"rank 1", or "rank 1 (world rank 3)" when the group's ranks are not the world's.</summary>
    private string Who(int rank) => worldRanks[rank] == rank ? $"rank {rank}" : $"rank {rank} (world rank {worldRanks[rank]})";
}
