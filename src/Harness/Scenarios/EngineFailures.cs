using Harness.Engine.Capture;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>Finds where an engine run broke: the first module failure among an exception's causes (root causes first).</summary>
public static class EngineFailures
{
    public static ModuleFailedException? FindModule(Exception e)
    {
        var queue = new Queue<Exception>([e]);
        while (queue.Count > 0)
        {
            var x = queue.Dequeue();
            if (x is ModuleFailedException m) return m;
            if (x is AggregateException a) foreach (var i in a.InnerExceptions) queue.Enqueue(i);
            if (x.InnerException is not null) queue.Enqueue(x.InnerException);
        }
        return null;
    }

    /// <summary>Every module failure among an exception's causes.</summary>
    public static IReadOnlyList<ModuleFailedException> AllModules(Exception e)
    {
        var found = new List<ModuleFailedException>();
        var queue = new Queue<Exception>([e]);
        var seen = new HashSet<Exception>(ReferenceEqualityComparer.Instance);
        while (queue.Count > 0)
        {
            var x = queue.Dequeue();
            if (!seen.Add(x)) continue;
            if (x is ModuleFailedException m) found.Add(m);
            if (x is AggregateException a) foreach (var i in a.InnerExceptions) queue.Enqueue(i);
            if (x.InnerException is not null) queue.Enqueue(x.InnerException);
        }
        return found;
    }

    /// <summary>
    /// One line for a failure no module was named in: each failed rank's exception (type and first line) and where it was
    /// (issue 24: "2 of 2 ranks failed:" kept only its first line and dropped every rank's reason). A rank's place is the
    /// module its error names, else the last module it recorded ("after model.layers.3"), else "before the first module".
    /// Ranks only released because another failed are counted, not listed.
    /// </summary>
    public static string RankReasons(Exception e, ActivationCapture capture)
    {
        var ranks = Find<Engine.Distributed.RankFailedException>(e);
        if (ranks is null) return Describe(e);
        var records = capture.Records;
        string Where(int rank, Exception error)
        {
            if (FindModule(error) is { } m) return $"in {m.Module}";
            var last = records.Where(r => r.Rank == rank).MaxBy(r => r.Sequence);
            return last is null ? "before the first module" : $"after {last.Module}";
        }
        var roots = ranks.Failures.Where(f => !IsReleased(f.Error)).ToList();
        int released = ranks.Failures.Count - roots.Count;
        var head = Engine.Distributed.RankFailedException.FirstLine(ranks.Message).TrimEnd(':');
        return $"{head}: " + string.Join("; ", roots.Select(f => $"rank {f.Rank} {Where(f.Rank, f.Error)}: {Describe(Innermost(f.Error))}")) +
               (released > 0 ? $"; {released} more released when it failed" : "");
    }

    private static bool IsReleased(Exception e) => e is Engine.Distributed.CollectiveException { Failure: Engine.Distributed.CollectiveFailure.PeerFailed };

    private static string Describe(Exception e) => $"{e.GetType().Name}: {Engine.Distributed.RankFailedException.FirstLine(e.Message)}";

    /// <summary>The error under the module wrapper (ModuleFailedException's message repeats the module).</summary>
    private static Exception Innermost(Exception e) => FindModule(e) is { InnerException: { } inner } ? inner : e;

    private static T? Find<T>(Exception e) where T : Exception
    {
        var queue = new Queue<Exception>([e]);
        var seen = new HashSet<Exception>(ReferenceEqualityComparer.Instance);
        while (queue.Count > 0)
        {
            var x = queue.Dequeue();
            if (!seen.Add(x)) continue;
            if (x is T t) return t;
            if (x is AggregateException a) foreach (var i in a.InnerExceptions) queue.Enqueue(i);
            if (x.InnerException is not null) queue.Enqueue(x.InnerException);
        }
        return null;
    }

    /// <summary>
    /// After an engine run failed, makes what the run reports independent of thread timing (issue 12: a fault scenario in
    /// which ranks fail recorded a different set of module rows from run to run, since which ranks recorded before the
    /// failure reached them was a race). The failure reported is the first in forward order among every rank's module
    /// failures (then the lowest rank); the capture keeps only the modules strictly before it in forward order, every
    /// record of the failed module, the modules inside it and the modules after it is dropped (they show as missing).
    /// With no module named, nothing recorded is kept. Returns the failed module (null: none named) and the one-line error.
    /// </summary>
    public static (string? Module, string Error) Settle(Exception e, ActivationCapture capture, IReadOnlyList<string> moduleOrder)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < moduleOrder.Count; i++) index.TryAdd(moduleOrder[i], i);
        int Cutoff(string module)
        {
            int cut = int.MaxValue;
            for (int i = 0; i < moduleOrder.Count; i++)
                if (moduleOrder[i] == module || moduleOrder[i].StartsWith(module + ".", StringComparison.Ordinal)) cut = Math.Min(cut, i);
            return cut;
        }
        var first = AllModules(e).OrderBy(m => Cutoff(m.Module)).ThenBy(m => m.WorldRank).ThenBy(m => m.Module, StringComparer.Ordinal).FirstOrDefault();
        if (first is null)
        {
            var reasons = RankReasons(e, capture);   // before the records go: they tell where each rank got to
            capture.RemoveWhere(_ => true);
            return (null, reasons);
        }
        int cutoff = Cutoff(first.Module);
        capture.RemoveWhere(r => !index.TryGetValue(r.Module, out int i) || i >= cutoff);
        return (first.Module, first.Message.Split('\n')[0]);
    }
}
