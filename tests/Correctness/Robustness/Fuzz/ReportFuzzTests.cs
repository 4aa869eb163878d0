using System.Text;
using System.Text.Json.Nodes;
using Harness.Commands;
using Harness.Reports;
using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Robustness.Fuzz;

/// <summary>
/// report.json fuzzing (a nightly's --baseline, `report --from`): truncated, another schema_version, fields removed or
/// retyped, values edited (verdicts, errors, ranks, shapes), bytes flipped. Each mutant is loaded, compared as a baseline
/// with a good report and re-rendered (report.json, junit.xml, index.html) as `report --from X --baseline X` does: each
/// ends in a pass or an error naming the file.
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class ReportFuzzTests(ITestOutputHelper output)
{
    [Fact]
    public void Every_report_mutant_ends_in_a_pass_or_an_error_naming_the_file()
    {
        var work = FuzzInputs.TempDirectory("report");
        try
        {
            // A real report with a baseline section: a passing Llama scenario, a fault whose ranks fail, an expert pair.
            var context = ScenarioContext.Recorded();
            var ids = new[] { "llama/tp2-sp-pp2/input-ids/fp32", "llama/tp2-sp-pp2/input-ids/fp32/fault=sp-pp-residual-sliced", "matmul/2d-x-5d/fp32" };
            var outcomes = ids.Select(id => ScenarioRunner.Run(ScenarioCatalog.Find(id)!, context)).ToList();
            var good = Path.Combine(work, "good");
            RunReportHook.Write(outcomes, good, null, 2.0, context);
            var goodJson = Path.Combine(good, "report.json");
            ReportWriter.WriteAll(AccuracyReport.Load(goodJson), good, AccuracyReport.Load(goodJson));
            var goodReport = AccuracyReport.Load(goodJson);
            var original = File.ReadAllText(goodJson);
            var path = Path.Combine(work, "baseline.json");
            var outDir = Path.Combine(work, "out");

            var campaign = new FuzzCampaign("report.json", output);
            campaign.Run(seed: 56, rng =>
            {
                var (kind, description, text) = Mutate(original, rng);
                File.WriteAllText(path, text);
                return new FuzzCampaign.Mutant(kind, description, path);
            }, m =>
            {
                var report = AccuracyReport.Load(m.File);
                BaselineComparison.Compare(goodReport, report);
                ReportWriter.WriteAll(report, outDir, report);
            });
            Assert.True(campaign.Passed > 0 && campaign.Named > 0, campaign.Summary);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    internal static (string Kind, string Description, string Text) Mutate(string original, Random rng)
    {
        switch (rng.Next(8))
        {
            case 0:
                int cut = rng.Next(original.Length);
                return ("truncate", $"cut at {cut} of {original.Length}", original[..cut]);
            case 1:
            {
                var root = JsonNode.Parse(original)!.AsObject();
                var v = new[] { "0", "2", "-1", "\"1\"", "null", "1.5" }[rng.Next(6)];
                root["schema_version"] = JsonNode.Parse(v);
                return ("schema_version", $"schema_version = {v}", root.ToJsonString());
            }
            case 2:
            {
                var bytes = Encoding.UTF8.GetBytes(original);
                int at = rng.Next(bytes.Length);
                bytes[at] = (byte)rng.Next(32, 127);
                return ("byte", $"byte {at} -> '{(char)bytes[at]}'", Encoding.UTF8.GetString(bytes));
            }
            default:
            {
                var root = JsonNode.Parse(original)!;
                var nodes = FuzzInputs.Nodes(root);
                var at = nodes[rng.Next(nodes.Count)];
                var where = FuzzInputs.Describe(at);
                switch (rng.Next(4))
                {
                    case 0:
                        FuzzInputs.Remove(at);
                        return ("remove", $"{where} removed", root.ToJsonString());
                    case 1:
                        var value = FuzzInputs.Retypes[rng.Next(FuzzInputs.Retypes.Length)];
                        FuzzInputs.Set(at, JsonNode.Parse(value));
                        return ("retype", $"{where} = {value}", root.ToJsonString());
                    case 2:
                        var edit = new[] { "\"pass\"", "\"fail\"", "\"bogus\"", "\"missing\"", "-5", "1e300", "-1e300", "123456789012", "\"2999-13-45T99:00:00Z\"", "[-1, 0]", "[]" }[rng.Next(11)];
                        FuzzInputs.Set(at, JsonNode.Parse(edit));
                        return ("edit", $"{where} = {edit}", root.ToJsonString());
                    default:
                        // A whole object or array emptied.
                        var node = at.Parent is JsonObject o ? o[at.Key] : at.Parent is JsonArray a ? a[at.Index] : null;
                        FuzzInputs.Set(at, node is JsonArray ? new JsonArray() : new JsonObject());
                        return ("empty", $"{where} emptied", root.ToJsonString());
                }
            }
        }
    }
}
