using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Judge;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness dump ID --out DIR` (a catalog scenario) or `harness dump --model HF_DIR --out DIR [--tp N --pp N --sp --dtype
/// --ids ... --fault NAME]` (a checkpoint of any registered family: `compare --model`'s own run, its checks, layouts and
/// faults, through <see cref="CompareCommand.Options.Then"/>): the C# engine's module outputs of that run, per world
/// rank and step with their shard placements and each decode step's fed token, in the dump format
/// (docs/dump-format.md), so `harness judge --dump DIR --model HF_DIR` judges our engine through the path a foreign
/// engine takes. The run is `harness run`'s own (<see cref="EngineDump.Run"/>), so its verdict is printed beside the
/// dump; a catalog scenario's HF model folder is copied to DIR/model for the judge. Exit 0 when the dump was written, 2
/// on bad input.
/// </summary>
internal static class DumpCommand
{
    public static Command Create()
    {
        var id = new Argument<string?>("id") { Description = "A catalog scenario id, exactly as `harness list` prints it.", Arity = ArgumentArity.ZeroOrOne };
        var model = new Option<string?>("--model") { Description = "An HF checkpoint folder (any family `compare --model` takes) instead of a catalog scenario.", HelpName = "HF_DIR" };
        var output = new Option<string>("--out") { Description = "The dump folder (rank-<R>.safetensors and rank-<R>.json per world rank).", Required = true, HelpName = "DIR" };
        var fault = new Option<string?>("--fault") { Description = "Inject this engine fault (`harness run --fault`'s names).", HelpName = "NAME" };
        var offline = new Option<bool>("--offline") { Description = "A catalog scenario on its recorded reference and model (fixtures/; no Python needed)." };
        var tp = new Option<int>("--tp") { Description = "With --model: tensor-parallel ranks.", DefaultValueFactory = _ => 1 };
        var pp = new Option<int>("--pp") { Description = "With --model: pipeline stages.", DefaultValueFactory = _ => 1 };
        var sp = new Option<bool>("--sp") { Description = "With --model: sequence parallelism." };
        var dtype = new Option<string>("--dtype") { Description = "With --model: the engine's dtype.", DefaultValueFactory = _ => "fp32" };
        dtype.AcceptOnlyFromAmong("fp32", "bf16");
        var ids = new Option<string?>("--ids") { Description = "With --model: the prompt's token ids, comma-separated (default: 7 seeded ids).", HelpName = "IDS" };
        foreach (var o in new[] { tp, pp })
            o.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<int>() < 1) r.AddError($"{o.Name} must be at least 1");
            });
        var command = new Command("dump",
            "Dump the C# engine's module outputs of one run (a catalog scenario, or --model HF_DIR) per rank and step with shard placements, " +
            "in the format `harness judge --dump` reads (docs/dump-format.md). Prints the run's own verdict and the judge command line.")
        {
            id, model, output, fault, offline, tp, pp, sp, dtype, ids,
        };
        command.Validators.Add(r =>
        {
            bool hasId = r.GetValue(id) is not null, hasModel = r.GetResult(model) is { Implicit: false };
            if (hasId == hasModel) r.AddError("dump needs a scenario id or --model HF_DIR (one of them)");
            if (hasModel && r.GetResult(offline) is { Implicit: false })
                r.AddError("--offline takes a catalog scenario (its recorded reference); --model runs compare's live run of the checkpoint");
        });
        command.SetAction(r =>
        {
            Scenario? scenario;
            if (r.GetValue(model) is { } dir)
            {
                if (r.GetValue(ids) is { } s && CliSupport.ParseIds(s) is null)
                    throw new InputException("--ids", $"expects comma-separated non-negative token ids, got '{s}'");
                return Checkpoint(new CompareCommand.Options(dir, r.GetValue(tp), r.GetValue(pp), r.GetValue(sp), r.GetValue(dtype)!, r.GetValue(ids), null)
                    { Fault = r.GetValue(fault) }, r.GetValue(output)!);
            }
            else
            {
                scenario = ScenarioCatalog.Find(r.GetValue(id)!);
                if (scenario is null)
                {
                    Console.Error.WriteLine($"harness dump: no scenario with id '{r.GetValue(id)}'");
                    CliSupport.PrintNearMatches(r.GetValue(id)!, Console.Error);
                    return ExitCodes.Usage;
                }
            }
            if (r.GetValue(fault) is { } f)
            {
                if (!Faults.Known.ContainsKey(f))
                {
                    Console.Error.WriteLine($"harness dump: unknown fault '{f}'");
                    CliSupport.PrintKnownFaults(Console.Error);
                    return ExitCodes.Usage;
                }
                scenario = CliSupport.WithFault(scenario, f);
            }
            using var context = r.GetValue(offline) ? ScenarioContext.Recorded() : CliSupport.LiveContext("dump");
            if (context is null) return ExitCodes.Usage;
            var written = EngineDump.Run(scenario, context, r.GetValue(output)!);
            Console.WriteLine(written.Summary);
            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>
    /// `dump --model`: compare's own run of the checkpoint (<see cref="CompareCommand.Run"/>: its family from the registry,
    /// the family's checks, layout and --fault), dumped instead of printed. <paramref name="written"/> hears the dump.
    /// </summary>
    internal static int Checkpoint(CompareCommand.Options options, string outDirectory, Action<EngineDump.Written>? written = null) =>
        CompareCommand.Run(options with
        {
            Then = (scenario, context) =>
            {
                var dump = EngineDump.Run(scenario, context, outDirectory);
                Console.WriteLine(dump.Summary);
                written?.Invoke(dump);
                return ExitCodes.Ok;
            },
        });
}
