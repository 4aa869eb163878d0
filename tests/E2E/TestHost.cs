using System.CommandLine;
using System.Globalization;
using Harness.Commands;
using Harness.Tests.Shared;

namespace Harness.Tests.E2E;

/// <summary>
/// This test assembly as a program: `dotnet Harness.E2E.dll --slow-writes-ms MS VERB ...` runs the harness CLI (Cli.Run,
/// the shipped command tree) with the tests' inputs the shipped CLI does not have (issue 20: test hooks out of production
/// code). --slow-writes-ms MS: `report` writes its files through <see cref="SlowStream"/> (a sleep of MS after each
/// 4 KiB), so that a test can kill it mid-write. (The test runner loads this assembly as a library; this entry point is
/// used only by the tests that start it.)
/// </summary>
public static class TestHost
{
    public const string SlowWritesOption = "--slow-writes-ms";

    /// <summary>This assembly's path, to start it with `dotnet`.</summary>
    public static string Dll => typeof(TestHost).Assembly.Location;

    public static int Main(string[] args)
    {
        if (args.Length < 2 || args[0] != SlowWritesOption || !int.TryParse(args[1], NumberStyles.None, CultureInfo.InvariantCulture, out int ms) || ms > 10_000)
        {
            Console.Error.WriteLine($"usage: dotnet Harness.E2E.dll {SlowWritesOption} MS (0 to 10000) VERB [ARGS] (the harness CLI with the tests' slow report writes)");
            return 2;
        }
        return Cli.Run(args[2..], () =>
        {
            var root = Cli.Build();
            var report = root.Subcommands.Single(c => c.Name == "report");
            root.Subcommands.Remove(report);
            root.Subcommands.Add(ReportCommand.Create(SlowStream.Through(ms)));
            return root;
        });
    }
}
