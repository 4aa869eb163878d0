namespace Harness.Engine.IO;

/// <summary>Picks the names closest to a wanted one (edit distance, ties broken by shared prefix, then name).</summary>
public static class NearNames
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
    public static int Distance(string a, string b)
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
