using Harness.Engine.Capture;

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
}
