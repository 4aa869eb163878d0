using System.Diagnostics;
using System.Globalization;
using Harness.Reference;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 24, found after a CI run was killed mid-suite: its sandboxed reference worker (user nobody, in the chroot) was
/// left behind stopped (state T), init's child. The worker ends on stdin's EOF, which a stopped process never reads. Now
/// it asks the kernel for SIGKILL when the harness dies (PR_SET_PDEATHSIG; SIGKILL ends a stopped process too), and the
/// next run removes what the dead one left (the worker's scratch folder).
/// </summary>
[Trait("Tier", "Live")]
public sealed class WorkerLifetimeTests
{
    [SkippableFact]
    public void A_stopped_worker_dies_with_its_killed_harness_and_the_next_run_removes_its_scratch_folder()
    {
        LiveCliTests.RequireReference();
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = CliProcess.RepositoryRoot,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { CliProcess.HarnessDll, "compare", "--model", "fixtures/models/tiny-llama-fp32" }) psi.ArgumentList.Add(a);
        psi.Environment["CI"] = "true";
        using var host = Process.Start(psi)!;
        host.OutputDataReceived += (_, _) => { };
        host.ErrorDataReceived += (_, _) => { };
        host.BeginOutputReadLine();
        host.BeginErrorReadLine();
        int worker = 0;
        string root = "/";
        try
        {
            // The worker: the harness's python child, once it maps torch (its first act, before importing torch, is the prctl).
            var clock = Stopwatch.StartNew();
            while (worker == 0)
            {
                Assert.False(host.HasExited, "compare ended before its worker was seen");
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(120), "no worker importing torch within 120 s");
                worker = Children(host.Id).FirstOrDefault(c => Read($"/proc/{c}/comm").StartsWith("python", StringComparison.Ordinal) &&
                                                              Read($"/proc/{c}/maps").Contains("libtorch", StringComparison.Ordinal));
                if (worker == 0) Thread.Sleep(50);
            }
            // the chroot wrapper only execs (unshare, chroot --userspec, env): the worker's parent is the harness itself
            Assert.Equal(host.Id, StatusField(worker, "PPid"));
            root = new DirectoryInfo($"/proc/{worker}/root").LinkTarget ?? "/";

            Signal(worker, "STOP");
            clock.Restart();
            while (!State(worker).StartsWith('T'))
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"worker {worker} did not stop: {State(worker)}");
                Thread.Sleep(10);
            }
            host.Kill();
            host.WaitForExit();

            clock.Restart();
            while (Alive(worker))
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5),
                    $"the stopped worker {worker} outlived its killed harness by 5 s (state {State(worker)}, parent {StatusField(worker, "PPid")})");
                Thread.Sleep(20);
            }
        }
        finally
        {
            if (!host.HasExited) host.Kill();
            if (worker != 0 && Alive(worker)) Signal(worker, "KILL");
        }

        // What the dead run left: the worker's scratch folder (named after its pid, in the chroot's /tmp/harness; the chroot
        // wrapper's sandbox makes it). The next run's worker start removes every such folder whose pid is gone
        // (ReferenceWorker: ScratchFolders.CleanStale on the hello's host_root): a worker that outlived its harness kept its own.
        if (root == "/") return;  // a plain interpreter (HARNESS_PYTHON without the chroot wrapper): no sandbox, no scratch folder
        var shared = Path.Join(root, "tmp", "harness");
        var left = Directory.EnumerateDirectories(shared, $"worker.run-{worker}-*").ToList();
        Assert.NotEmpty(left);
        ScratchFolders.CleanStale(shared);
        Assert.All(left, dir => Assert.False(Directory.Exists(dir), $"{dir} of the dead worker was not removed"));
    }

    private static IEnumerable<int> Children(int pid)
    {
        IEnumerable<string> tasks;
        try { tasks = Directory.EnumerateDirectories($"/proc/{pid}/task").ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { yield break; }
        foreach (var task in tasks)
            foreach (var c in Read(Path.Join(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                yield return int.Parse(c, CultureInfo.InvariantCulture);
    }

    private static string Read(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return ""; }
    }

    private static string Status(int pid) => Read($"/proc/{pid}/status");

    private static int StatusField(int pid, string field) =>
        Status(pid).Split('\n').Where(l => l.StartsWith(field + ":", StringComparison.Ordinal))
            .Select(l => int.Parse(l[(field.Length + 1)..].Trim(), CultureInfo.InvariantCulture)).DefaultIfEmpty(-1).First();

    private static string State(int pid) =>
        Status(pid).Split('\n').FirstOrDefault(l => l.StartsWith("State:", StringComparison.Ordinal))?["State:".Length..].Trim() ?? "gone";

    /// <summary>Alive: a /proc entry that is not a zombie (a killed orphan waits for init to reap it).</summary>
    private static bool Alive(int pid) => State(pid) is var s && s != "gone" && !s.StartsWith('Z') && !s.StartsWith('X');

    private static void Signal(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)]) { UseShellExecute = false })!;
        kill.WaitForExit();
        Assert.True(kill.ExitCode == 0, $"kill -{signal} {pid} exited {kill.ExitCode}");
    }
}
