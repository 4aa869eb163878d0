using System.CommandLine;
using System.CommandLine.Invocation;
using Harness.Commands;

namespace Harness;

/// <summary>
/// Command-line entry (System.CommandLine): one verb per file in Commands/. Parse errors (unknown verb or option, bad
/// value) print the error and a pointer to --help and exit 2, as every usage error does.
/// </summary>
public static class Cli
{
    public static RootCommand Build()
    {
        var root = new RootCommand(
            "Harness: a C# LLM inference engine checked against HuggingFace transformers, layer by layer and token by token.\n" +
            "Exit codes: 0 passed, 1 failed/diverged (or a regression against --baseline), 2 bad input (usage, or a file we were given: " +
            "one line naming the file and field or tensor), 3 internal error (with the stack trace).")
        {
            ListCommand.Create(),
            RunCommand.Create(),
            ReproCommand.Create(),
            CompareCommand.Create(),
            FixturesCommand.Create(),
            ReportCommand.Create(),
            RatiosCommand.Create(),
            JudgeCommand.Create(),
            DumpCommand.Create(),
            SoakCommand.Create(),
            BenchCommands.Bench(),
            BenchCommands.CheckKernels(),
            BenchCommands.CheckGpu(),
        };
        foreach (var option in root.Options)
            if (option is VersionOption version)
                version.Action = new PrintVersion();
        return root;
    }

    public static int Run(string[] args) => Run(args, Build);

    /// <summary>
    /// Runs <paramref name="args"/> against the command tree <paramref name="build"/> makes (called after the engine's
    /// settings are read): exit codes, output escaping and error handling as <c>harness</c> itself, which is
    /// <c>Run(args, Build)</c>. A program embedding the CLI adds its verbs to <see cref="Build"/>'s tree here.
    /// </summary>
    public static int Run(string[] args, Func<RootCommand> build)
    {
        // Everything printed goes through an escaping writer (issue 24: an ESC or BEL in a model_type, tensor or folder
        // name reached the terminal raw); Spectre's own ANSI output (terminal mode) writes to the raw stdout, and its
        // call sites escape what they print.
        var badSetting = ConfigureSettings();                               // the boundary: every setting from the environment, once
        TextWriter rawOut = Console.Out, rawError = Console.Error;
        if (!CliSupport.PlainOutput)
            Spectre.Console.AnsiConsole.Console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings { Out = new Spectre.Console.AnsiConsoleOutput(rawOut) });
        Console.SetOut(TextWriter.Synchronized(new CliInputs.EscapingWriter(rawOut)));
        Console.SetError(TextWriter.Synchronized(new CliInputs.EscapingWriter(rawError)));
        try
        {
            return badSetting is null ? RunEscaped(args, build) : CliSupport.UsageError(badSetting);
        }
        finally
        {
            Console.Out.Flush();
            Console.Error.Flush();
            Console.SetOut(rawOut);
            Console.SetError(rawError);
        }
    }

    /// <summary>
    /// The settings from this process's environment, read once here, at the boundary, and handed down: the engine's
    /// (HARNESS_THREADS, HARNESS_BATCH_INVARIANT, HARNESS_GEMM_KERNEL, HARNESS_BF16_KERNEL, HARNESS_CUDA_SYNC, HARNESS_CACHE,
    /// HARNESS_CUDA_LIB_DIR, HARNESS_PYTHON, CUDA_HOME/CUDA_PATH) and the reference's (HARNESS_REQUIRE_REFERENCE,
    /// HARNESS_WORKER_MEMORY_MB, HARNESS_REFERENCE_DEVICE; <see cref="Reference.ReferenceSettings"/>) and the CLI's
    /// (HARNESS_FIXTURES, CI, TERM; <see cref="CliSettings"/>). Nothing else in the engine, the reference or the CLI reads
    /// or sets a variable (SettingsBoundaryTests). A bad value: the message naming the variable (null: configured). Test
    /// assemblies call it from their module initializer.
    /// </summary>
    public static string? ConfigureSettings()
    {
        try
        {
            var engine = Engine.Runtime.EngineSettings.From(Environment.GetEnvironmentVariable);
            var reference = Reference.ReferenceSettings.From(Environment.GetEnvironmentVariable, engine);
            var cli = CliSettings.From(Environment.GetEnvironmentVariable);
            Engine.Runtime.EngineSettings.Configure(engine);
            Reference.ReferenceSettings.Configure(reference);
            CliSettings.Configure(cli);
            return null;
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            return e.Message;
        }
    }

    private static int RunEscaped(string[] args, Func<RootCommand> build)
    {
        var root = build();
        if (args.Length == 0)
        {
            // No verb: the help, on stderr, as a usage error (a nightly job with a missing verb must not pass).
            root.Parse(["--help"]).Invoke(new InvocationConfiguration { Output = Console.Error });
            return ExitCodes.Usage;
        }
        ParseResult parsed;
        try
        {
            parsed = root.Parse(args);
        }
        catch (InvalidOperationException e)
        {
            // A validator read a value that does not parse ("--tp abc") or was not given ("run --baseline" last on the line):
            // System.CommandLine throws from inside its parser instead of reporting it (issue 24's CLI fuzz found both crash
            // the process with exit 134). Parsing runs no action of ours: whatever it throws is a problem with the line.
            var verb = args.Length > 0 && root.Subcommands.Any(c => c.Name == args[0]) ? " " + args[0] : "";
            return CliSupport.UsageError($"{ParseFailure(e.Message)} (see `harness{verb} --help`)");
        }
        if (parsed.Errors.Count > 0 && parsed.Action is ParseErrorAction)
        {
            var errors = parsed.Errors.Select(e => e.Message).ToList();
            if (errors.Count > 1) errors.RemoveAll(m => m.StartsWith("Required command was not provided", StringComparison.Ordinal));
            // One line, as every input problem (issue 24): the errors, then where the help is.
            var verb = parsed.CommandResult.Command == root ? "" : " " + parsed.CommandResult.Command.Name;
            Console.Error.WriteLine($"harness: {string.Join("; ", errors.Select(e => e.ReplaceLineEndings(" ")))} (see `harness{verb} --help`)");
            return ExitCodes.Usage;
        }
        var verbName = parsed.CommandResult.Command == root ? "" : parsed.CommandResult.Command.Name;
        try
        {
            // Our handler, not System.CommandLine's (which prints "Unhandled exception" and a trace for bad input too).
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            return CliSupport.Fail(verbName, e);
        }
    }

    /// <summary>"Cannot parse argument 'abc' for option '--tp' as expected type 'System.Int32'." as a user reads it.</summary>
    private static string ParseFailure(string message)
    {
        var text = message.TrimEnd('.');
        foreach (var (type, what) in new[] { ("System.Nullable`1[System.Int32]", "an integer"), ("System.Int32", "an integer"), ("System.Double", "a number"), ("System.Int64", "an integer") })
            text = text.Replace($"as expected type '{type}'", $"as {what}", StringComparison.Ordinal);
        return text;
    }

    private sealed class PrintVersion : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine($"harness {CliSupport.EngineVersion} (.NET {Environment.Version})");
            return 0;
        }
    }
}
