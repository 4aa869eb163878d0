namespace Harness.Engine.IO;

/// <summary>
/// Marks an exception as a problem with what a user handed us (a folder, config.json, weights, a prompt, a baseline
/// report, a recorded fixture), not a bug of ours. Its message is one line that names the file and the field or
/// tensor at fault; the CLI prints just that line and exits 2 (an internal error prints its trace and exits 3).
/// </summary>
public interface IInputError
{
    /// <summary>The file (or folder) at fault.</summary>
    string InputPath { get; }
}

/// <summary>A bad input that has no more specific exception type (a report.json, a fixture, a prompt, a layout).</summary>
public sealed class InputException(string path, string problem, Exception? inner = null)
    : Exception($"{path}: {problem}", inner), IInputError
{
    public string InputPath { get; } = path;
}

/// <summary>Classifies an exception (and its causes) as an input problem or an internal error.</summary>
public static class InputErrors
{
    /// <summary>
    /// The input problem inside <paramref name="e"/> (itself, an inner exception, or one of an aggregate's), or null when
    /// it is an internal error. A missing file or folder counts as input: its message names the path.
    /// </summary>
    public static Exception? Find(Exception e)
    {
        var queue = new Queue<Exception>([e]);
        var seen = new HashSet<Exception>(ReferenceEqualityComparer.Instance);
        while (queue.Count > 0)
        {
            var x = queue.Dequeue();
            if (!seen.Add(x)) continue;
            if (x is IInputError or FileNotFoundException or DirectoryNotFoundException) return x;
            if (x is AggregateException a) foreach (var i in a.InnerExceptions) queue.Enqueue(i);
            if (x.InnerException is not null) queue.Enqueue(x.InnerException);
        }
        return null;
    }

    /// <summary>The one line to print for an input problem (the message's first line).</summary>
    public static string OneLine(Exception e) => e.Message.Split('\n')[0].TrimEnd('\r');
}
