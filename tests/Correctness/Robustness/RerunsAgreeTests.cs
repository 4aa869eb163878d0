using System.Text.Json.Nodes;
using Harness.Commands;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 12, "reruns agree": two runs of the same catalog write the same report apart from timings and the timestamp,
/// module rows included. The bug: in a fault scenario whose ranks fail (llama/tp2-sp-pp2/*/fault=sp-pp-residual-sliced),
/// whether rank 2 recorded model.layers.2.input_layernorm before rank 3's failure released it was a race, so the report
/// had that row in one run and a "missing" row in the next.
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class RerunsAgreeTests
{
    private static string Normalized(string reportJson)
    {
        var root = JsonNode.Parse(File.ReadAllText(reportJson))!;
        Strip(root);
        return root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }

    private static void Strip(JsonNode? node)
    {
        if (node is JsonObject o)
        {
            foreach (var key in new[] { "generated_at", "elapsed_seconds" }) o.Remove(key);
            foreach (var (_, v) in o) Strip(v);
        }
        else if (node is JsonArray a)
            foreach (var v in a) Strip(v);
    }

    private static string RunCatalog(string directory, IReadOnlyList<Scenario> scenarios)
    {
        var context = ScenarioContext.Recorded();
        var outcomes = scenarios.Select(s => ScenarioRunner.Run(s, context)).ToList();
        RunReportHook.Write(outcomes, directory, null, 2.0, context);
        return Path.Combine(directory, RunReportHook.FileName);
    }

    [Fact]
    public void Two_runs_of_the_offline_catalog_write_the_same_report_apart_from_timings()
    {
        var dir = Path.Combine(Path.GetTempPath(), "harness-reruns-" + Guid.NewGuid().ToString("N"));
        try
        {
            var first = Normalized(RunCatalog(Path.Combine(dir, "1"), ScenarioCatalog.All));
            var second = Normalized(RunCatalog(Path.Combine(dir, "2"), ScenarioCatalog.All));
            Assert.True(first == second, FirstDifference(first, second));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_scenario_whose_ranks_fail_records_the_same_rows_every_time()
    {
        var failing = ScenarioCatalog.All.Where(s => s.Fault == Harness.Engine.Runtime.Faults.SpPpResidualSliced).ToList();
        Assert.NotEmpty(failing);
        var dir = Path.Combine(Path.GetTempPath(), "harness-reruns-" + Guid.NewGuid().ToString("N"));
        try
        {
            var reports = Enumerable.Range(0, 6).Select(i => Normalized(RunCatalog(Path.Combine(dir, $"{i}"), failing))).ToList();
            foreach (var r in reports.Skip(1)) Assert.True(reports[0] == r, FirstDifference(reports[0], r));
            // what is kept: every module before the failed layer; layer 2 and after are missing, on every run
            var scenario = JsonNode.Parse(reports[0])!["scenarios"]![0]!;
            var rows = scenario["modules"]!.AsArray().Select(m => (Label: (string)m!["label"]!, Verdict: (string)m["verdict"]!)).ToList();
            Assert.Contains(rows, r => r.Label.StartsWith("model.layers.1.mlp (rank 0", StringComparison.Ordinal) && r.Verdict == "pass");
            Assert.All(rows.Where(r => r.Label.StartsWith("model.layers.2", StringComparison.Ordinal)), r => Assert.Equal("missing", r.Verdict));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    private static string FirstDifference(string a, string b)
    {
        var la = a.Split('\n');
        var lb = b.Split('\n');
        for (int i = 0; i < Math.Min(la.Length, lb.Length); i++)
            if (la[i] != lb[i])
                return $"the reports differ at line {i + 1}:\n{string.Join('\n', la.Skip(Math.Max(0, i - 8)).Take(12))}\n--- vs ---\n{string.Join('\n', lb.Skip(Math.Max(0, i - 8)).Take(12))}";
        return $"the reports differ in length: {la.Length} vs {lb.Length} lines";
    }
}
