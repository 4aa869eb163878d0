using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Harness.Reference;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness soak [filter...] [--rounds N] [--offline] [--device cpu|cuda]`: the selected catalog scenarios run N times in
/// this one process, each round in a fresh context (as a nightly's run would be), and after each round (and a full garbage
/// collection) the process's resident memory, managed heap, open file descriptors, threads, the run's scratch folders and
/// temporary files, its child processes (the reference worker) and, with --device cuda, the GPU's memory in use
/// (cudaMemGetInfo: total - free, so a live reference on the same GPU counts too). Issue 24: nothing may grow. Exit 1
/// when a count grows past its value after the warm-up round or memory (resident or device) grows by more than a
/// quarter over it (or a scenario fails), else 0.
/// </summary>
internal static class SoakCommand
{
    public sealed record Round(int Index, int Passed, int Failed, double Seconds, long RssMiB, long ManagedMiB, int Fds, int Threads, int ScratchFolders, int TempFiles, int Children, long DeviceMiB = -1);

    public static Command Create()
    {
        var filter = new Argument<string[]>("filter") { Description = "Which scenarios (as for run); none: all.", Arity = ArgumentArity.ZeroOrMore };
        var rounds = new Option<int>("--rounds") { Description = "How many times to run the selection.", DefaultValueFactory = _ => 20, HelpName = "N" };
        rounds.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int>() is < 2 or > 10_000) r.AddError("--rounds must be between 2 and 10000");
        });
        var offline = new Option<bool>("--offline") { Description = "Against the recorded reference (no Python)." };
        var device = new Option<string>("--device")
        {
            Description = "Where the engine runs: cpu (default) or cuda (ids get a /cuda part; scenarios without a GPU path are listed and left out); cuda adds the GPU's memory in use to every round.",
            DefaultValueFactory = _ => "cpu",
            HelpName = "cpu|cuda",
        };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var command = new Command("soak",
            "Run the selected scenarios N times in one process and print, after each round, resident memory, managed heap, open file " +
            "descriptors, threads, scratch folders, temporary files and worker processes. Exit 1 when any grows after the first round " +
            "(resident memory: by more than 25 %) or a scenario fails, 2 on usage errors.")
        {
            filter, rounds, offline, device,
        };
        command.SetAction(r => Run(r.GetValue(filter) ?? [], r.GetValue(rounds), r.GetValue(offline), r.GetValue(device) ?? "cpu"));
        return command;
    }

    public static int Run(string[] filters, int rounds, bool offline, string device = "cpu")
    {
        var selected = (filters.Length == 0 ? ScenarioCatalog.All : filters.SelectMany(ScenarioCatalog.Filter)).ToHashSet();
        var scenarios = ScenarioCatalog.All.Where(selected.Contains).ToList();
        if (scenarios.Count == 0) return CliSupport.UsageError($"soak: no scenario matches '{string.Join(" ", filters)}'");
        if (device != "cpu")
        {
            var onDevice = scenarios.Select(s => (s, d: CudaScenarios.OnDevice(s, device))).ToList();
            foreach (var (s, _) in onDevice.Where(x => x.d is null)) Console.WriteLine($"left out on {device}: {s.Id} (no GPU path for {s.Model} scenarios yet)");
            scenarios = onDevice.Where(x => x.d is not null).Select(x => x.d!).ToList();
            if (scenarios.Count == 0) return CliSupport.UsageError($"soak: none of the selected scenarios runs on {device}");
            if (!Engine.Cuda.CudaDevice.TryGet(out var gpu, out var why))
            {
                Console.Error.WriteLine($"harness soak --device {device}: no usable GPU: {why}");
                return ExitCodes.Failed;
            }
            Console.WriteLine($"engine on {Bench.GpuSelfCheck.Describe(gpu!)}");
        }
        var worker = ReferenceWorker.SharedOn(ReferenceSettings.Current.DeviceFor(device));   // the reference on the GPU too (HARNESS_REFERENCE_DEVICE overrides)
        if (!offline && !worker.IsAvailable)
            return CliSupport.UsageError($"soak: the live reference is not available: {worker.Description}; or use --offline");
        Console.WriteLine($"soak: {scenarios.Count} scenario{(scenarios.Count == 1 ? "" : "s")} x {rounds} rounds, {(offline ? "offline" : "live")}, in process {Environment.ProcessId}");
        Console.WriteLine($"machine: {CpuName()}, {Environment.ProcessorCount} cores");
        string[] header = ["round", "passed", "failed", "s", "rss MiB", "managed MiB", "fds", "threads", "scratch dirs", "temp files", "workers", .. (device == "cpu" ? Array.Empty<string>() : ["device MiB"])];
        Console.WriteLine(string.Join("  ", header));
        var all = new List<Round>();
        for (int i = 1; i <= rounds; i++)
        {
            var sw = Stopwatch.StartNew();
            int passed = 0, failed = 0;
            using (var context = offline ? ScenarioContext.Recorded() : ScenarioContext.Live(ReferenceClient.SharedOn(worker.Device)))
                foreach (var s in scenarios)
                {
                    var e = ScenarioExecution.Run(s, context);
                    if (e.Result.Passed) passed++;
                    else
                    {
                        failed++;
                        Console.WriteLine($"  FAIL {s.Id}: {e.Reason}");
                    }
                }
            var round = Measure(i, passed, failed, sw.Elapsed.TotalSeconds, onGpu: device != "cpu", worker);
            all.Add(round);
            Console.WriteLine(string.Join("  ", new object[] { round.Index, round.Passed, round.Failed, round.Seconds.ToString("F1", CultureInfo.InvariantCulture),
                round.RssMiB, round.ManagedMiB, round.Fds, round.Threads, round.ScratchFolders, round.TempFiles, round.Children }
                .Concat(device == "cpu" ? [] : new object[] { round.DeviceMiB })));
        }
        var grew = Growth(all);
        foreach (var g in grew) Console.WriteLine($"GROWS: {g}");
        Console.WriteLine(grew.Count == 0 ? $"nothing grew over {rounds} rounds" : $"{grew.Count} measure(s) grew");
        return grew.Count > 0 || all.Any(r => r.Failed > 0) ? ExitCodes.Failed : ExitCodes.Ok;
    }

    /// <summary>What grew from the warm-up round (the first) to the last: counts beyond the first round's, memory beyond 125 % of it.</summary>
    public static List<string> Growth(IReadOnlyList<Round> rounds)
    {
        var grew = new List<string>();
        var (first, last) = (rounds[0], rounds[^1]);
        void Count(string what, Func<Round, int> f)
        {
            if (f(last) > f(first)) grew.Add($"{what}: {f(first)} after round 1, {f(last)} after round {last.Index}");
        }
        Count("open file descriptors", r => r.Fds);
        Count("scratch folders", r => r.ScratchFolders);
        Count("temporary files", r => r.TempFiles);
        Count("worker processes", r => r.Children);
        if (last.Threads > first.Threads + 2) grew.Add($"threads: {first.Threads} after round 1, {last.Threads} after round {last.Index}");
        if (last.RssMiB > first.RssMiB * 5 / 4) grew.Add($"resident memory: {first.RssMiB} MiB after round 1, {last.RssMiB} MiB after round {last.Index}");
        if (first.DeviceMiB >= 0 && last.DeviceMiB > first.DeviceMiB * 5 / 4)
            grew.Add($"device memory: {first.DeviceMiB} MiB after round 1, {last.DeviceMiB} MiB after round {last.Index}");
        return grew;
    }

    private static Round Measure(int index, int passed, int failed, double seconds, bool onGpu, ReferenceWorker worker)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long rss = 0;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024;
        }
        catch (IOException) { }
        int fds = Count(() => Directory.GetFileSystemEntries("/proc/self/fd").Length);
        int threads = Count(() => Directory.GetDirectories("/proc/self/task").Length);
        int children = Count(() => Directory.GetDirectories("/proc/self/task")
            .Sum(t => File.Exists(Path.Combine(t, "children")) ? File.ReadAllText(Path.Combine(t, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries).Length : 0));
        var mine = $".run-{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-";
        int temp = TempPlaces(worker).Sum(dir => Count(() => Directory.EnumerateFileSystemEntries(dir).Count(e => Path.GetFileName(e).Contains(mine, StringComparison.Ordinal))));
        long deviceMiB = -1;
        if (onGpu)
        {
            var (free, total) = Engine.Cuda.Interop.CudaRuntime.MemGetInfo();   // the whole GPU: the engine's pool and a live reference's
            deviceMiB = (total - free) >> 20;
        }
        return new Round(index, passed, failed, seconds, rss, GC.GetTotalMemory(false) >> 20, fds, threads, ScratchFolders.OwnedNow.Count, temp, children, deviceMiB);
    }

    private static IEnumerable<string> TempPlaces(ReferenceWorker worker)
    {
        yield return Path.Combine(Path.GetTempPath(), "harness");
        if (worker.Hello is { } h && (string?)h["host_root"] is { Length: > 0 } root) yield return Path.Join(root, "tmp", "harness");
    }

    private static int Count(Func<int> f)
    {
        try { return f(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return -1; }
    }

    private static string CpuName()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
        }
        catch (IOException) { return "?"; }
    }
}
