using System.Diagnostics;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 12, "nothing half-written": reports (like fixtures and recorded models, through the same AtomicFile) are written
/// to a temporary name and renamed. Here the CLI is killed while it writes a report (the hidden test input
/// slow writes of the test host, <see cref="TestHost"/>, sleep after each 4 KiB so the kill lands mid-file) at three moments; the previous report.json, junit.xml and index.html must be intact,
/// and the next run cleans the dead process's temporary files and writes the new report whole.
/// </summary>
public sealed class KillWhileWritingTests : IDisposable
{
    private static readonly string[] Files = ["report.json", "junit.xml", "index.html"];
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-kill-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private Dictionary<string, byte[]> Snapshot(string dir) => Files.ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(dir, f)));

    [Fact]
    public void A_report_killed_while_it_is_written_leaves_the_previous_report_intact()
    {
        string source = Path.Combine(_dir, "source"), target = Path.Combine(_dir, "target"), expected = Path.Combine(_dir, "expected");
        var run = CliProcess.Run("run", "--offline", "llama/tp2", "--report", source);
        Assert.True(run.ExitCode == 0, run.ToString());
        var json = Path.Combine(source, "report.json");
        var old = CliProcess.Run("report", "--from", json, "--out", target);
        Assert.True(old.ExitCode == 0, old.ToString());
        var before = Snapshot(target);
        // The new report differs from the old one: it carries a baseline section.
        string[] newArgs = ["report", "--from", json, "--out", target, "--baseline", json];
        var fresh = CliProcess.Run(["report", "--from", json, "--out", expected, "--baseline", json], null);
        Assert.True(fresh.ExitCode == 0, fresh.ToString());
        var after = Snapshot(expected);
        Assert.NotEqual(before["report.json"], after["report.json"]);
        Assert.NotEqual(before["index.html"], after["index.html"]);

        // Kill while the first, the second and the third file is being written.
        for (int stage = 0; stage < Files.Length; stage++)
        {
            string file = Files[stage];
            using var p = Start(newArgs, slowWritesMs: 2);
            var sw = Stopwatch.StartNew();
            while (!Directory.EnumerateFiles(target).Select(Path.GetFileName).Any(f => f!.Contains(file, StringComparison.Ordinal) && f.Contains(".tmp-", StringComparison.Ordinal)))
            {
                Assert.False(p.HasExited, $"the writer finished before it was killed (stage {stage})");
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), "no temporary file appeared");
                Thread.Sleep(2);
            }
            Thread.Sleep(20);
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            var now = Snapshot(target);
            Assert.All(Files, f => Assert.True(now[f].AsSpan().SequenceEqual(before[f]), $"{f} changed after a kill while writing {Files[stage]}"));
            Assert.NotEmpty(Directory.EnumerateFiles(target, "*.tmp-*")); // the kill did land mid-write
        }

        // The next run writes the new report whole and removes the dead writers' temporary files.
        var done = CliProcess.Run(newArgs);
        Assert.True(done.ExitCode == 0, done.ToString());
        var final = Snapshot(target);
        Assert.All(Files, f => Assert.True(final[f].AsSpan().SequenceEqual(after[f]), $"{f} is not the new report"));
        Assert.Empty(Directory.EnumerateFiles(target, "*.tmp-*"));
    }

    private static Process Start(string[] args, int slowWritesMs)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = CliProcess.RepositoryRoot,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // the harness CLI as this test assembly's program runs it, with the tests' slow report writes
        psi.ArgumentList.Add(TestHost.Dll);
        psi.ArgumentList.Add(TestHost.SlowWritesOption);
        psi.ArgumentList.Add(slowWritesMs.ToString(System.Globalization.CultureInfo.InvariantCulture));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["CI"] = "true";
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }
}
