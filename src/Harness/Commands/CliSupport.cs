using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Text;
using Harness.Engine.Runtime;
using Harness.Reference;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>Exit codes every verb uses.</summary>
public static class ExitCodes
{
    /// <summary>Everything passed (for repro/compare: the comparison passed).</summary>
    public const int Ok = 0;
    /// <summary>A scenario failed (for repro/compare: engine and reference diverged).</summary>
    public const int Failed = 1;
    /// <summary>
    /// Bad input: a bad option, unknown id/filter/fault, no reference interpreter for a live run, or a problem with a
    /// file the user handed us (model folder, config.json, weights, prompt, baseline report, fixture). One line naming
    /// the file and the field or tensor; no stack trace.
    /// </summary>
    public const int Usage = 2;
    /// <summary>An internal error (a bug of ours): the stack trace is printed.</summary>
    public const int Internal = 3;
}

/// <summary>What the verbs share: console mode, live-context creation, scenario lookups, fault injection, version.</summary>
internal static class CliSupport
{
    /// <summary>"1, 2,3" as token ids (compare --prompt, judge --ids); null when any part is not a non-negative integer.</summary>
    public static long[]? ParseIds(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) return null;
        var ids = new long[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!long.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i])) return null;
        return ids;
    }

    /// <summary>Plain line output: stdout is not a terminal, or CI is set (CI=true/1), or TERM=dumb.</summary>
    public static bool PlainOutput => Console.IsOutputRedirected || CliSettings.Current.PlainTerminal;

    public static string Seconds(TimeSpan t) => t.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + " s";

    public static int UsageError(string message)
    {
        // "compare: ..." / "compare --device cuda: ..." is the verb's own line: "harness compare: ...", as an input error
        // thrown from the verb prints (Fail); anything else "harness: ..."
        bool verbFirst = System.Text.RegularExpressions.Regex.IsMatch(message, "^[a-z]+(:| --)", System.Text.RegularExpressions.RegexOptions.CultureInvariant);
        Console.Error.WriteLine(verbFirst ? $"harness {message}" : $"harness: {message}");
        return ExitCodes.Usage;
    }

    /// <summary>
    /// The one rule for an exception that reaches a verb: an input problem (<see cref="Engine.IO.InputErrors"/>) is one
    /// line naming the file and field or tensor, exit 2; anything else is a bug of ours: the whole trace, exit 3.
    /// </summary>
    public static int Fail(string verb, Exception e)
    {
        if (Engine.IO.InputErrors.Find(e) is { } input)
        {
            Console.Error.WriteLine($"harness {verb}: {Engine.IO.InputErrors.OneLine(input)}".Replace("harness : ", "harness: ", StringComparison.Ordinal));
            return ExitCodes.Usage;
        }
        Console.Error.WriteLine($"harness {verb}: internal error (a bug in the harness; please report it with this trace):".Replace("harness : ", "harness: ", StringComparison.Ordinal));
        Console.Error.WriteLine(e.ToString());
        return ExitCodes.Internal;
    }

    /// <summary>The engine's version: Harness.Engine's informational version (with the commit when built from git).</summary>
    public static string EngineVersion
    {
        get
        {
            var asm = typeof(Faults).Assembly;
            return asm.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
                   ?? asm.GetName().Version?.ToString() ?? "unknown";
        }
    }

    /// <summary>
    /// The live context over the process's worker for an engine on <paramref name="engineDevice"/> (its reference on the
    /// device <see cref="ReferenceSettings.DeviceFor"/> says: HARNESS_REFERENCE_DEVICE, else the GPU beside a CUDA engine),
    /// or null after printing why none is possible (no interpreter found).
    /// </summary>
    public static ScenarioContext? LiveContext(string verb, string engineDevice = "cpu")
    {
        var device = ReferenceSettings.Current.DeviceFor(engineDevice);
        var worker = ReferenceWorker.SharedOn(device);
        if (!worker.IsAvailable)
        {
            Console.Error.WriteLine($"harness {verb}: the live reference is not available: {worker.Description}");
            Console.Error.WriteLine($"  set {ReferenceLocator.PythonVariable} to a python with torch, transformers and safetensors, or run ci/reference-env.sh" +
                                    (verb is "run" or "repro" ? $"; or use --offline to compare against the recorded fixtures" : ""));
            return null;
        }
        return ScenarioContext.Live(ReferenceClient.SharedOn(device));
    }

    /// <summary>"did you mean" lines for a filter or id that matched nothing.</summary>
    public static void PrintNearMatches(string text, TextWriter w)
    {
        w.WriteLine("did you mean:");
        foreach (var id in ScenarioCatalog.NearMatches(text)) w.WriteLine($"  {id}");
        w.WriteLine("(`harness list` shows every id)");
    }

    public static void PrintKnownFaults(TextWriter w)
    {
        w.WriteLine("known faults:");
        int width = Faults.Known.Keys.Max(k => k.Length);
        foreach (var (name, description) in Faults.Known.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine($"  {name.PadRight(width)}  {description}");
    }

    /// <summary>
    /// The scenario with a fault injected (any scenario, any known fault): a mutation check with no expected module, its
    /// id suffixed with /fault=NAME (replacing a catalog fault).
    /// </summary>
    public static Scenario WithFault(Scenario scenario, string fault)
    {
        return scenario with { Fault = fault, ExpectedFirstBadModule = null, Id = Scenario.WithFault(scenario.Id, fault) };
    }

    /// <summary>A plain-text table (left-aligned columns, two spaces apart), for logs and redirected output.</summary>
    public static string PlainTable(IReadOnlyList<string> header, IEnumerable<string[]> rows)
    {
        var all = rows.ToList();
        var widths = header.Select((h, i) => all.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        var sb = new StringBuilder();
        void Row(IReadOnlyList<string> c)
        {
            for (int i = 0; i < c.Count; i++)
            {
                if (i > 0) sb.Append("  ");
                sb.Append(i == c.Count - 1 ? c[i] : c[i].PadRight(widths[i]));
            }
            sb.Append('\n');
        }
        Row(header);
        Row(widths.Select(w => new string('-', w)).ToArray());
        foreach (var r in all) Row(r);
        return sb.ToString();
    }
}
