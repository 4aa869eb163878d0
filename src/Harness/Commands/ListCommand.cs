using System.CommandLine;
using System.Text.Json;
using Harness.Scenarios;
using Spectre.Console;

namespace Harness.Commands;

/// <summary>`harness list [filter] [--json]`: the catalog's ids with model, layout, dtype, input and fault.</summary>
internal static class ListCommand
{
    public static Command Create()
    {
        var filter = new Argument<string?>("filter")
        {
            Description = "Comma-separated terms, all of which must match an id: a substring, or a glob with '*'; '!' negates a term. Empty: every scenario.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var json = new Option<bool>("--json") { Description = "Print a JSON array instead of a table." };
        var command = new Command("list", "List the catalog's scenarios (id, model, layout, dtype, input, fault). A filter matching nothing exits 2 with the nearest ids.")
        {
            filter, json,
        };
        command.SetAction(r => Run(r.GetValue(filter), r.GetValue(json)));
        return command;
    }

    public static int Run(string? filter, bool json)
    {
        var scenarios = ScenarioCatalog.Filter(filter);
        if (scenarios.Count == 0)
        {
            Console.Error.WriteLine($"harness list: no scenario matches '{filter}'");
            CliSupport.PrintNearMatches(filter ?? "", Console.Error);
            return ExitCodes.Usage;
        }
        if (json)
        {
            using var stdout = Console.OpenStandardOutput();
            using (var w = new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            {
                w.WriteStartArray();
                foreach (var s in scenarios)
                {
                    w.WriteStartObject();
                    w.WriteString("id", s.Id);
                    w.WriteString("model", s.Model);
                    w.WriteString("layout", s.Layout);
                    w.WriteString("dtype", Scenario.DTypeTag(s.DType));
                    w.WriteString("input", s.Input);
                    w.WriteString("tolerance", s.Tolerance);
                    if (s.Fault is null) w.WriteNull("fault");
                    else w.WriteString("fault", s.Fault);
                    if (s.ExpectedFirstBadModule is null) w.WriteNull("expected_first_bad_module");
                    else w.WriteString("expected_first_bad_module", s.ExpectedFirstBadModule);
                    w.WriteString("description", s.Description);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            stdout.WriteByte((byte)'\n');
            return ExitCodes.Ok;
        }
        string[] header = ["id", "model", "layout", "dtype", "input", "fault"];
        var rows = scenarios.Select(s => new[] { s.Id, s.Model, s.Layout, Scenario.DTypeTag(s.DType), s.Input, s.Fault ?? "-" }).ToList();
        if (CliSupport.PlainOutput)
            Console.Write(CliSupport.PlainTable(header, rows));
        else
        {
            var table = new Table().Border(TableBorder.Simple);
            foreach (var h in header) table.AddColumn(h);
            foreach (var r in rows) table.AddRow(r.Select(c => Markup.Escape(c)).ToArray());
            AnsiConsole.Write(table);
        }
        Console.WriteLine($"{scenarios.Count} of {ScenarioCatalog.All.Count} scenarios");
        return ExitCodes.Ok;
    }
}
