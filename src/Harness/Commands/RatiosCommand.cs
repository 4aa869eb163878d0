using System.CommandLine;
using Harness.Reports;

namespace Harness.Commands;

/// <summary>
/// `harness ratios --from report.json [--from ...]`: the distribution of a correct engine's error ratios against the
/// float64 oracle (per dtype and module kind: median, 99th percentile, max; the per-scenario geometric mean), the
/// measurement the oracle bounds are chosen from (README, "Tolerances"). Feed it `run --report` outputs: the catalog live
/// and offline, and `compare --report` on models of other seeds. Exit 0, 2 on a bad file.
/// </summary>
internal static class RatiosCommand
{
    public static Command Create()
    {
        var from = new Option<string[]>("--from")
        {
            Description = "report.json files (run --report DIR writes DIR/report.json); repeat for several.",
            HelpName = "FILE", Required = true, AllowMultipleArgumentsPerToken = true,
        };
        var worst = new Option<int>("--worst") { Description = "How many of the largest ratios to list per dtype.", DefaultValueFactory = _ => 10, HelpName = "N" };
        var command = new Command("ratios", "The distribution of engine/reference error ratios against the float64 oracle in report.json files (how the bounds are chosen).")
        {
            from, worst,
        };
        command.SetAction(r =>
        {
            var reports = r.GetValue(from)!.Select(AccuracyReport.Load).ToList();
            Console.Write(RatioDistribution.Format(reports, r.GetValue(worst)));
            return ExitCodes.Ok;
        });
        return command;
    }
}
