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
            capture.RemoveWhere(_ => true);
            return (null, e.Message.Split('\n')[0]);
        }
        int cutoff = Cutoff(first.Module);
        capture.RemoveWhere(r => !index.TryGetValue(r.Module, out int i) || i >= cutoff);
        return (first.Module, first.Message.Split('\n')[0]);
    }
}
