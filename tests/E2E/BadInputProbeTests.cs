using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 24's probes, tried as a new user and as an attacker would: each printed a trace and exited 3, hung, ran out of
/// memory, exited 1, or printed control characters raw. Now each is one line on stderr naming the file, option or field,
/// exit 2, within seconds and before any work. (The README's robustness section has the same list with each message.)
/// </summary>
public sealed class BadInputProbeTests : IDisposable
{
    private static readonly Dictionary<string, string?> NoPython = new()
    {
        ["HARNESS_PYTHON"] = "/nonexistent/python", ["HARNESS_CACHE"] = "/nonexistent",
    };

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-probes-" + Guid.NewGuid().ToString("N"));

    public BadInputProbeTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static CliProcess.Result Probe(params string[] args) => CliProcess.Run(args, NoPython, timeoutSeconds: 60);

    private static void AssertOneLine(CliProcess.Result r, params string[] mentions)
    {
        Assert.True(r.ExitCode == 2, r.ToString());
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line on stderr\n{r}");
        Assert.DoesNotContain("   at ", r.All);
        foreach (var m in mentions) Assert.Contains(m, r.Stderr);
    }

    private string Model(string name)
    {
        var dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", "tiny-llama-fp32")))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static void MakeFifo(string path)
    {
        File.Delete(path);
        using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    private string Report()
    {
        var dir = Path.Combine(_dir, "good");
        var r = CliProcess.Run("run", "--offline", "llama/tp1/input-ids/fp32", "--report", dir);
        Assert.True(r.ExitCode == 0, r.ToString());
        return Path.Combine(dir, "report.json");
    }

    [Fact]
    public void Report_folders_that_cannot_be_written_are_found_before_any_work()
    {
        var json = Report();
        var file = Path.Combine(_dir, "a-file");
        File.WriteAllText(file, "x");
        AssertOneLine(Probe("run", "--offline", "llama/tp1/input-ids/fp32", "--report", ""), "--report \"\": an empty path is not a folder");
        var r = Probe("run", "--offline", "llama/tp1/input-ids/fp32", "--report", "/proc/version/report");
        AssertOneLine(r, "--report /proc/version/report: cannot write there");
        Assert.DoesNotContain("running", r.Stdout);   // found at the start, not after every scenario ran
        AssertOneLine(Probe("report", "--from", json, "--out", ""), "--out \"\": an empty path is not a folder");
        AssertOneLine(Probe("report", "--from", json, "--out", file), $"--out {file}: is a regular file, not a folder");
        AssertOneLine(Probe("report", "--from", json, "--out", "/dev/null"), "--out /dev/null: is a character device, not a folder");
        AssertOneLine(Probe("report", "--from", json, "--out", "/proc/version/report"), "cannot write there");
        foreach (var g in new[] { "NaN", "0", "-1" })
            AssertOneLine(Probe("report", "--from", json, "--out", Path.Combine(_dir, "o"), "--growth-factor", g), "--growth-factor must be a number >= 1");
    }

    [Fact]
    public void Inputs_that_are_not_regular_files_are_named_as_what_they_are()
    {
        AssertOneLine(Probe("report", "--from", "/dev/zero", "--out", Path.Combine(_dir, "o")), "/dev/zero: is a character device, not a regular file");

        var zero = Model("zero");
        File.Delete(Path.Combine(zero, "config.json"));
        File.CreateSymbolicLink(Path.Combine(zero, "config.json"), "/dev/zero");
        AssertOneLine(Probe("compare", "--model", zero), "config.json: is a character device, not a regular file");

        var loop = Model("loop");
        File.Delete(Path.Combine(loop, "config.json"));
        File.CreateSymbolicLink(Path.Combine(loop, "config.json"), "other.json");
        File.CreateSymbolicLink(Path.Combine(loop, "other.json"), "config.json");
        AssertOneLine(Probe("compare", "--model", loop), "config.json: is a loop of symbolic links");

        var huge = Model("huge");
        using (var fs = File.Create(Path.Combine(huge, "config.json"))) fs.SetLength(200L << 20);   // the 200 MB (sparse)
        AssertOneLine(Probe("compare", "--model", huge), "config.json: is 209,715,200 bytes; a config file may be at most 16,777,216");

        var fifo = Model("fifo");
        MakeFifo(Path.Combine(fifo, "config.json"));
        AssertOneLine(Probe("compare", "--model", fifo), "config.json: is a FIFO (named pipe), not a regular file");

        var fifoTokenizer = Model("fifo-tokenizer");
        MakeFifo(Path.Combine(fifoTokenizer, "tokenizer.json"));
        AssertOneLine(Probe("compare", "--model", fifoTokenizer, "--text", "hello"), "tokenizer.json: is a FIFO (named pipe), not a regular file");

        var fifoPrompts = Path.Combine(_dir, "prompts.txt");
        MakeFifo(fifoPrompts);
        AssertOneLine(Probe("judge", "--endpoint", "http://127.0.0.1:9", "--model", Model("judged"), "--prompts", fifoPrompts),
            "prompts.txt: is a FIFO (named pipe), not a regular file");
        var fifoGguf = Path.Combine(_dir, "model.gguf");
        MakeFifo(fifoGguf);
        AssertOneLine(Probe("judge", "--gguf", fifoGguf, "--model", Model("judged-gguf"), "--ids", "1,2"), "model.gguf: is a FIFO (named pipe), not a regular file");

        var fifoWeights = Model("fifo-weights");
        MakeFifo(Path.Combine(fifoWeights, "model.safetensors"));
        AssertOneLine(Probe("compare", "--model", fifoWeights), "model.safetensors: is a FIFO (named pipe), not a regular file");
    }

    /// <summary>
    /// Found by the extended CLI fuzz (seed 190068, `harness run --baseline`): an option with no value last on the line,
    /// read by a validator of the verb, made System.CommandLine throw from its parser: "Unhandled exception.
    /// System.InvalidOperationException: Required argument missing for option: '--baseline'", exit 134.
    /// </summary>
    [Fact]
    public void An_option_without_its_value_last_on_the_line_is_one_line_not_a_crash()
    {
        AssertOneLine(Probe("run", "--baseline"), "Required argument missing for option: '--baseline'", "(see `harness run --help`)");
        AssertOneLine(Probe("run", "--offline", "--baseline"), "'--baseline'");
        AssertOneLine(Probe("compare", "--tp", "abc"), "Cannot parse argument 'abc' for option '--tp' as an integer", "(see `harness compare --help`)");
    }

    [Fact]
    public void An_architecture_that_is_no_model_class_is_named_as_the_field()
    {
        var dir = Model("trainer");
        var path = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        config["architectures"] = new JsonArray("Trainer");
        File.WriteAllText(path, config.ToJsonString());
        AssertOneLine(Probe("compare", "--model", dir), "architectures.0 is 'Trainer': not a llama model class");
    }

    [Fact]
    public void Control_characters_from_a_checkpoint_are_escaped_in_what_is_printed()
    {
        var dir = Model("escape\u0007");
        var path = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        config["model_type"] = "lla\u001b[31mma\u0007";
        File.WriteAllText(path, config.ToJsonString());
        var r = Probe("compare", "--model", dir);
        AssertOneLine(r, "escape\\x07", "'lla\\x1b[31mma\\x07'");
        Assert.DoesNotContain('\u001b', r.All);
        Assert.DoesNotContain('\u0007', r.All);
    }
}
