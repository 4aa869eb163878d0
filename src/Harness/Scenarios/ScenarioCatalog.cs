using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>
/// Every scenario the harness knows, by stable id. The xunit tests, `harness list/run/repro` and the nightly report
/// all read this one list; no scenario is written twice.
/// </summary>
public static class ScenarioCatalog
{
    public static IReadOnlyList<Scenario> All { get; } = Build();

    private static List<Scenario> Build()
    {
        var list = new List<Scenario>();

        // Scenario 1: matmul shapes (batch-invariant), Gemma4-E2B's 4D x 3D among them.
        list.Add(new MatmulScenario("gemma4-e2b-4dx3d", [1, 2, 32, 64], [2, 64, 16], DType.BFloat16));
        list.Add(new MatmulScenario("gemma4-e2b-4dx3d", [1, 2, 32, 64], [2, 64, 16], DType.Float32));
        list.Add(new MatmulScenario("2d-x-5d", [32, 64], [1, 2, 2, 64, 16], DType.Float32));
        list.Add(new MatmulScenario("broadcast-5d", [1, 2, 4, 32, 64], [1, 2, 4, 64, 16], DType.Float32));

        // Every registered model family's entries (ModelFamilies: Llama under every layout and its planted bugs, Gemma3n,
        // Gemma4's text decoder, multimodal side and towers, Qwen2-VL and scenario 3's bug).
        foreach (var family in ModelFamilies.All)
            list.AddRange(family.Scenarios());

        var duplicate = list.GroupBy(s => s.Id).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidOperationException($"scenario id {duplicate.Key} appears twice in the catalog");
        return list;
    }

    /// <summary>
    /// Scenarios whose id matches a filter: empty = all; otherwise every comma-separated term must match, a term
    /// being a substring of the id or a glob with '*'. A leading '!' negates a term.
    /// </summary>
    public static IReadOnlyList<Scenario> Filter(string? filter)
    {
        if (string.IsNullOrWhiteSpace(filter)) return All;
        var terms = filter.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return All.Where(s => terms.All(t => t.StartsWith('!') ? !Matches(s.Id, t[1..]) : Matches(s.Id, t))).ToList();
    }

    public static Scenario? Find(string id) => All.FirstOrDefault(s => s.Id == id);

    /// <summary>The ids closest to a wrong id or filter (edit distance), for "did you mean".</summary>
    public static IReadOnlyList<string> NearMatches(string text, int count = 5) =>
        All.Select(s => (s.Id, Distance: Engine.IO.NearNames.Distance(text, s.Id) - (s.Id.Contains(text.Split('/')[0], StringComparison.Ordinal) ? 5 : 0)))
            .OrderBy(x => x.Distance).ThenBy(x => x.Id).Take(count).Select(x => x.Id).ToList();

    private static bool Matches(string id, string term)
    {
        if (!term.Contains('*')) return id.Contains(term, StringComparison.Ordinal);
        var pattern = "^" + System.Text.RegularExpressions.Regex.Escape(term).Replace("\\*", ".*") + "$";
        return System.Text.RegularExpressions.Regex.IsMatch(id, pattern);
    }
}
