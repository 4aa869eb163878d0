using Harness.Engine.IO;
using Harness.Reports;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>What the long fuzz campaigns found, kept as tests.</summary>
public sealed class FuzzFindingsTests
{
    /// <summary>
    /// report.json fuzz, long mode (mutant 29552, seed 473016): one byte turned "rtol": 1E-05 into 1E905, which System.Text.Json
    /// reads as infinity; the layer plot's axis then looped from 1e-12 to infinity, `harness report` ran 54 s and died with
    /// an internal error (exit 3). Now the reader rejects the number, naming the file and the field (exit 2).
    /// </summary>
    [Fact]
    public async Task A_number_that_overflows_to_infinity_is_a_named_error_not_an_endless_plot()
    {
        var path = Path.Combine(Path.GetTempPath(), $"harness-finding-{Guid.NewGuid():N}.json");
        try
        {
            var report = AccuracyReport.Create([Harness.Tests.Correctness.Reports.SyntheticScenarios.Record(fail: false)], Harness.Tests.Correctness.Reports.SyntheticScenarios.Environment());
            var json = System.Text.Encoding.UTF8.GetString(ReportJson.Write(report));
            Assert.Contains("\"rtol\": ", json);
            var at = json.IndexOf("\"rtol\": ", StringComparison.Ordinal) + "\"rtol\": ".Length;
            var end = json.IndexOfAny([',', '\n', '}'], at);
            File.WriteAllText(path, json[..at] + "1E905" + json[end..]);
            var e = Assert.Throws<InputException>(() => AccuracyReport.Load(path));
            Assert.Equal($"{path}: field 'rtol' is not a finite number (1E905)", e.Message);

            // and the plot itself ignores a non-finite bound
            var bad = report.Scenarios[0] with
            {
                Modules = report.Scenarios[0].Modules.Select(m => m with { Tolerance = m.Tolerance! with { Rtol = double.PositiveInfinity } }).ToList(),
            };
            await Task.Run(() => LayerPlot.Render(bad)).WaitAsync(TimeSpan.FromSeconds(10));   // TimeoutException: the plot did not finish
        }
        finally
        {
            File.Delete(path);
        }
    }
}
