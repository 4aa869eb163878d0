namespace Harness.Engine.IO;

/// <summary>
/// A safetensors file (or a checkpoint index) that breaks the format. The message names the file, the tensor
/// when one is at fault, and the offending values; <see cref="Path"/> and <see cref="TensorName"/> carry them too.
/// </summary>
public sealed class SafetensorsFormatException : Exception
{
    public string Path { get; }

    /// <summary>The tensor at fault, or null when the problem is with the file as a whole (length, header, gaps at the end).</summary>
    public string? TensorName { get; }

    public SafetensorsFormatException(string path, string? tensorName, string problem, Exception? inner = null)
        : base(Format(path, tensorName, problem), inner)
    {
        Path = path;
        TensorName = tensorName;
    }

    private static string Format(string path, string? tensorName, string problem) =>
        tensorName is null ? $"{path}: {problem}" : $"{path}: tensor '{tensorName}': {problem}";
}

/// <summary>A tensor asked for by name that the file or checkpoint does not hold; the message lists near names.</summary>
public sealed class TensorNotFoundException : KeyNotFoundException
{
    public string Origin { get; }
    public string TensorName { get; }
    public IReadOnlyList<string> NearNames { get; }

    public TensorNotFoundException(string source, string tensorName, IReadOnlyList<string> nearNames, int total, string? what = null)
        : base($"{source}: no tensor named '{tensorName}'{(what is null ? "" : " " + what)} ({total} tensors; " +
               (nearNames.Count == 0 ? "none is close" : "nearest: " + string.Join(", ", nearNames.Select(n => $"'{n}'"))) + ")")
    {
        Origin = source;
        TensorName = tensorName;
        NearNames = nearNames;
    }
}

/// <summary>Picks the names closest to a wanted one (edit distance, ties broken by shared prefix, then name).</summary>
internal static class NearNames
{
    public static IReadOnlyList<string> Find(string wanted, IEnumerable<string> names, int count = 5)
    {
        return names
            .Select(n => (name: n, dist: Distance(wanted, n), prefix: CommonPrefix(wanted, n)))
            .OrderBy(x => x.dist).ThenByDescending(x => x.prefix).ThenBy(x => x.name, StringComparer.Ordinal)
            .Take(count)
            .Where(x => x.dist <= Math.Max(1, Math.Max(wanted.Length, x.name.Length) * 2 / 3) || x.prefix > 0)
            .Select(x => x.name)
            .ToList();
    }

    private static int CommonPrefix(string a, string b)
    {
        int i = 0;
        while (i < a.Length && i < b.Length && a[i] == b[i]) i++;
        return i;
    }

    /// <summary>Levenshtein distance, two rows.</summary>
    internal static int Distance(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) prev[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                cur[j] = Math.Min(sub, Math.Min(prev[j] + 1, cur[j - 1] + 1));
            }
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }
}
