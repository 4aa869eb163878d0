using System.Diagnostics;
using System.Globalization;
using System.Text;
using Xunit.Abstractions;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 24, the command line fuzzed: random verbs (every verb but bench, whose runs are minutes of measurement by
/// design; BenchArgumentTests checks its arguments), options (each verb's own and made-up ones), paths (regular files,
/// a good report, folders, model folders of every family, a model whose config.json is 200 MB, one with a FIFO for its
/// tokenizer, an HF-hub-like folder of relative links, a dump folder whose index is a FIFO, FIFOs, links to /dev/zero, a
/// loop of links, dangling links, devices, /proc, missing ones, the empty string) and values (numbers, NaN, negatives,
/// huge ones, URLs, control characters). Every run must end in 0, 1 or 2, never 3 (a trace), never a hang (60 s); exit 2
/// says why on its first stderr line ("harness..."). The one documented 3: `check-gpu` on a machine with no usable GPU.
/// Each mutant runs as its own process with no interpreter (live verbs stop at "not available"), in a scratch working
/// folder (relative paths land there). CI: 36 mutants or 120 s. The long campaign (README, robustness section):
/// HARNESS_FUZZ_SECONDS=N runs N seconds, HARNESS_FUZZ_SEED=S starts at another seed (each mutant's seed is S + i, printed
/// with a finding to replay it), HARNESS_FUZZ_LOG=FILE appends the counts.
/// </summary>
public sealed class CliFuzzTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-clifuzz-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static readonly string[] Verbs =
        ["list", "run", "repro", "compare", "report", "fixtures", "soak", "judge", "dump", "ratios", "check-kernels", "check-gpu", "help", "--version", "--help", "frobnicate", ""];

    private static readonly Dictionary<string, string[]> Options = new()
    {
        ["list"] = ["--json"],
        ["run"] = ["--offline", "--report", "--baseline", "--growth-factor", "--fault", "--fail-fast", "--device", "--config-mutations"],
        ["repro"] = ["--fault", "--offline"],
        ["compare"] = ["--model", "--tp", "--pp", "--sp", "--dtype", "--prompt", "--prompt-length", "--no-oracle", "--image", "--video", "--audio", "--max-new-tokens", "--prompt-embeds"],
        ["report"] = ["--from", "--out", "--baseline", "--growth-factor"],
        ["fixtures"] = ["record"],
        ["soak"] = ["--rounds", "--offline"],
        ["judge"] = ["--endpoint", "--dump", "--gguf", "--dump-out", "--model", "--prompts", "--text", "--ids", "--max-tokens", "--top-k", "--dtype", "--prompt-as",
                     "--served-gguf", "--served-model", "--margin", "--logprob-tolerance", "--timeout", "--report"],
        ["dump"] = ["--model", "--offline", "--out", "--fault", "--tp", "--pp", "--sp", "--dtype"],
        ["ratios"] = ["--from", "--worst"],
        ["check-gpu"] = ["--bogus"],
    };

    private static readonly string[] Made = ["--bogus", "-x", "--", "--report=", "--tp=", "---model"];

    private List<string> Paths()
    {
        var model = Path.Combine(_dir, "model");
        return
        [
            Path.Combine(_dir, "file.txt"), Path.Combine(_dir, "good", "report.json"), Path.Combine(_dir, "folder"), model,
            Path.Combine(_dir, "fifo"), Path.Combine(_dir, "zero-link"), Path.Combine(_dir, "loop"), Path.Combine(_dir, "dangling"),
            Path.Combine(_dir, "missing", "x"), Path.Combine(model, "config.json"), Path.Combine(model, "model.safetensors"),
            "/dev/null", "/dev/zero", "/proc/version", "/proc/version/x", "", "relative-out", ".", "\u001b[31mred",
            Path.Combine(_dir, "gemma4"), Path.Combine(_dir, "qwen2-vl"), Path.Combine(_dir, "gemma3n"), Path.Combine(_dir, "huge-config"),
            Path.Combine(_dir, "fifo-tokenizer"), Path.Combine(_dir, "hub", "snapshots", "rev"), Path.Combine(_dir, "dump"), Path.Combine(_dir, "prompts.txt"),
        ];
    }

    private static readonly string[] Values =
    [
        "0", "1", "2", "-1", "7", "NaN", "Infinity", "1e309", "99999999999999999999", "2147483647", "0.5", "abc", "fp32", "bf16", "fp16",
        "cpu", "cuda", "1,2,3", ",,", "-5,3", "llama/tp1/input-ids/fp32", "matmul/2d", "*", "!llama", "sp-residual-first-slice",
        "\u0007bell", "x\ny", "http://127.0.0.1:9", "http://[::1", "ftp://x", "ids", "text", "auto",
    ];

    private void Prepare()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "folder"));
        File.WriteAllText(Path.Combine(_dir, "file.txt"), "{\"not\": \"a report\"");
        var model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", "tiny-llama-fp32")))
            File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        using (var p = Process.Start(new ProcessStartInfo("mkfifo", [Path.Combine(_dir, "fifo")]) { UseShellExecute = false })!) p.WaitForExit();
        File.CreateSymbolicLink(Path.Combine(_dir, "zero-link"), "/dev/zero");
        File.CreateSymbolicLink(Path.Combine(_dir, "loop"), "loop2");
        File.CreateSymbolicLink(Path.Combine(_dir, "loop2"), "loop");
        File.CreateSymbolicLink(Path.Combine(_dir, "dangling"), "nowhere");
        foreach (var (name, fixture) in new[] { ("gemma4", "tiny-gemma4-e2b-like-fp32"), ("qwen2-vl", "tiny-qwen2-vl-fp32"), ("gemma3n", "tiny-gemma3n-fp32"),
                                                ("huge-config", "tiny-llama-fp32"), ("fifo-tokenizer", "tiny-llama-fp32") })
        {
            Directory.CreateDirectory(Path.Combine(_dir, name));
            foreach (var f in Directory.GetFiles(Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", fixture)))
                File.Copy(f, Path.Combine(_dir, name, Path.GetFileName(f)));
        }
        using (var fs = File.Create(Path.Combine(_dir, "huge-config", "config.json"))) fs.SetLength(200L << 20);   // sparse
        using (var p = Process.Start(new ProcessStartInfo("mkfifo", [Path.Combine(_dir, "fifo-tokenizer", "tokenizer.json")]) { UseShellExecute = false })!) p.WaitForExit();
        // an HF hub snapshot: relative links into ../../blobs
        var hub = Path.Combine(_dir, "hub");
        Directory.CreateDirectory(Path.Combine(hub, "blobs"));
        Directory.CreateDirectory(Path.Combine(hub, "snapshots", "rev"));
        foreach (var f in Directory.GetFiles(model))
        {
            File.Copy(f, Path.Combine(hub, "blobs", "b-" + Path.GetFileName(f)));
            File.CreateSymbolicLink(Path.Combine(hub, "snapshots", "rev", Path.GetFileName(f)), Path.Combine("..", "..", "blobs", "b-" + Path.GetFileName(f)));
        }
        Directory.CreateDirectory(Path.Combine(_dir, "dump"));
        using (var p = Process.Start(new ProcessStartInfo("mkfifo", [Path.Combine(_dir, "dump", "rank-0.json")]) { UseShellExecute = false })!) p.WaitForExit();
        File.WriteAllText(Path.Combine(_dir, "prompts.txt"), "hello\n\u001b[31mred\n");
        var r = CliProcess.Run("run", "--offline", "llama/tp1/input-ids/fp32", "--report", Path.Combine(_dir, "good"));
        Assert.True(r.ExitCode == 0, r.ToString());
    }

    private string[] Mutant(Random rng, List<string> paths)
    {
        var args = new List<string>();
        var verb = Verbs[rng.Next(Verbs.Length)];
        if (verb.Length > 0) args.Add(verb);
        var own = Options.GetValueOrDefault(verb, []);
        int n = rng.Next(0, 5);
        for (int i = 0; i < n; i++)
        {
            int pick = rng.Next(10);
            string option = pick < 6 && own.Length > 0 ? own[rng.Next(own.Length)] : pick < 8 ? Made[rng.Next(Made.Length)] : Options.Values.SelectMany(o => o).ElementAt(rng.Next(Options.Values.Sum(o => o.Length)));
            args.Add(option);
            if (rng.Next(4) > 0) args.Add(rng.Next(2) == 0 ? paths[rng.Next(paths.Count)] : Values[rng.Next(Values.Length)]);
        }
        if (rng.Next(3) == 0) args.Add(rng.Next(2) == 0 ? paths[rng.Next(paths.Count)] : Values[rng.Next(Values.Length)]);
        // keep runs short: the catalog narrowed, offline, soak to 2 rounds
        if (verb is "run" or "soak" or "repro" && rng.Next(3) > 0) args.AddRange(["--offline", "llama/tp1/input-ids/fp32"]);
        if (verb == "soak") args.AddRange(["--rounds", "2", "llama/tp1/input-ids/fp32"]);
        if (verb == "dump" && rng.Next(3) > 0) args.AddRange(["--offline", "llama/tp1/input-ids/fp32"]);
        return args.ToArray();
    }

    private (int Code, string Stdout, string Stderr)? Launch(string[] args, TimeSpan limit)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = Path.Combine(_dir, "cwd"), RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliProcess.HarnessDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["CI"] = "true";
        psi.Environment["HARNESS_PYTHON"] = "/nonexistent/python";
        psi.Environment["HARNESS_CACHE"] = "/nonexistent";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(limit))
        {
            p.Kill(entireProcessTree: true);
            return null;
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void Every_random_command_line_ends_in_0_1_or_2_with_a_reason_never_a_trace_or_a_hang()
    {
        Prepare();
        Directory.CreateDirectory(Path.Combine(_dir, "cwd"));
        var paths = Paths();
        var longSeconds = int.TryParse(Environment.GetEnvironmentVariable("HARNESS_FUZZ_SECONDS"), NumberStyles.None, CultureInfo.InvariantCulture, out int s) && s > 0 ? s : (int?)null;
        var sw = Stopwatch.StartNew();
        var findings = new List<string>();
        var codes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        int total = 0;
        int seedBase = int.TryParse(Environment.GetEnvironmentVariable("HARNESS_FUZZ_SEED"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int b) ? b : 24 * 7919;
        for (int i = 0; longSeconds is int l ? sw.Elapsed.TotalSeconds < l : i < 36 && sw.Elapsed < TimeSpan.FromSeconds(120); i++)
        {
            int seed = unchecked(seedBase + i);
            var args = Mutant(new Random(seed), paths);
            var shown = string.Join(' ', args.Select(a => a.Length == 0 || a.Any(char.IsWhiteSpace) || a.Any(char.IsControl) ? $"'{a.ReplaceLineEndings("\\n").Replace("\u001b", "\\e", StringComparison.Ordinal).Replace("\u0007", "\\a", StringComparison.Ordinal)}'" : a));
            total++;
            var r = Launch(args, TimeSpan.FromSeconds(60));
            string? finding = null;
            if (r is null) finding = "hung (killed after 60 s)";
            else
            {
                var (code, stdout, stderr) = r.Value;
                bool noGpu = code == 3 && args.FirstOrDefault() == "check-gpu" && (stdout + stderr).StartsWith("no usable GPU:", StringComparison.Ordinal);   // its documented 3
                var key = code.ToString(CultureInfo.InvariantCulture) + (noGpu ? " (check-gpu: no usable GPU)" : "");
                codes[key] = codes.GetValueOrDefault(key) + 1;
                if (code is not (0 or 1 or 2) && !noGpu) finding = $"exit {code}: {stderr.Split('\n')[0]}";
                else if ((stdout + stderr).Contains("   at ", StringComparison.Ordinal) || (stdout + stderr).Contains("Unhandled exception", StringComparison.Ordinal)) finding = "a stack trace";
                else if (code == 2 && !stderr.StartsWith("harness", StringComparison.Ordinal) && !stderr.StartsWith("Usage", StringComparison.Ordinal) && !stderr.StartsWith("Description", StringComparison.Ordinal))
                    finding = $"exit 2 without a reason first: {stderr.Split('\n')[0]}";
                else if ((stdout + stderr).Contains('\u001b') || (stdout + stderr).Contains('\u0007')) finding = "a control character printed raw";
            }
            if (finding is not null) findings.Add($"seed {seed}: harness {shown}\n    {finding}");
        }
        var summary = $"cli: {total} command lines from seed {seedBase} in {sw.Elapsed.TotalSeconds:F0} s ({(longSeconds is null ? "CI mode" : $"long mode, {longSeconds} s")}): exit codes " +
                      string.Join(", ", codes.Select(kv => $"{kv.Key}: {kv.Value}")) + $"; {findings.Count} findings";
        output.WriteLine(summary);
        if (Environment.GetEnvironmentVariable("HARNESS_FUZZ_LOG") is { Length: > 0 } log) File.AppendAllText(log, $"{DateTime.UtcNow:u} {summary}\n");
        Assert.True(findings.Count == 0, summary + "\n" + string.Join("\n", findings.Take(20)));
    }
}
