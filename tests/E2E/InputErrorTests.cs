using System.Text.Json;
using System.Text.Json.Nodes;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 12, as a new user met it: `compare --model DIR` on a folder whose config.json lacks num_attention_heads printed
/// "Unhandled exception" with a stack trace and exited 1; a truncated model.safetensors was not checked at all and the
/// reference failed instead. Now every input problem is one line naming the file and the field or tensor, exit 2, with
/// no trace and before any reference work (no interpreter is even looked for); an internal error prints its trace, exit 3.
/// </summary>
public sealed class InputErrorTests : IDisposable
{
    private static readonly Dictionary<string, string?> NoPython = new()
    {
        ["HARNESS_PYTHON"] = "/nonexistent/python", ["HARNESS_CACHE"] = "/nonexistent",
    };

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-input-" + Guid.NewGuid().ToString("N"));

    public InputErrorTests()
    {
        var model = Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", "tiny-llama-fp32");
        Directory.CreateDirectory(_dir);
        foreach (var f in Directory.GetFiles(model)) File.Copy(f, Path.Combine(_dir, Path.GetFileName(f)));
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private string ConfigPath => Path.Combine(_dir, "config.json");
    private string WeightsPath => Path.Combine(_dir, "model.safetensors");

    private static void AssertOneLineInputError(CliProcess.Result r, params string[] mentions)
    {
        Assert.True(r.ExitCode == 2, r.ToString());
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line on stderr\n{r}");
        Assert.DoesNotContain("   at ", r.All);
        Assert.DoesNotContain("Unhandled exception", r.All);
        foreach (var m in mentions) Assert.Contains(m, r.Stderr);
    }

    [Fact]
    public void Config_without_num_attention_heads_is_one_line_naming_the_field()
    {
        var config = JsonNode.Parse(File.ReadAllText(ConfigPath))!.AsObject();
        config.Remove("num_attention_heads");
        File.WriteAllText(ConfigPath, config.ToJsonString());
        AssertOneLineInputError(CliProcess.Run(["compare", "--model", _dir], NoPython), ConfigPath, "num_attention_heads is missing");
    }

    [Fact]
    public void Truncated_weights_are_caught_by_the_engine_before_the_reference()
    {
        var bytes = File.ReadAllBytes(WeightsPath);
        File.WriteAllBytes(WeightsPath, bytes[..(bytes.Length / 2)]);
        AssertOneLineInputError(CliProcess.Run(["compare", "--model", _dir], NoPython), WeightsPath);
    }

    [Fact]
    public void A_misspelt_prefix_names_the_missing_tensor_and_the_close_unexpected_one()
    {
        RenameTensors(WeightsPath, n => n.Replace("model.layers.1.", "model.layer.1.", StringComparison.Ordinal));
        var r = CliProcess.Run(["compare", "--model", _dir], NoPython);
        AssertOneLineInputError(r, WeightsPath, "'model.layers.1.input_layernorm.weight' [64] is missing", "close: 'model.layer.1.input_layernorm.weight'");
    }

    [Fact]
    public void A_tensor_of_the_wrong_shape_for_the_config_names_the_config_fields()
    {
        var config = JsonNode.Parse(File.ReadAllText(ConfigPath))!.AsObject();
        config["vocab_size"] = 300;
        File.WriteAllText(ConfigPath, config.ToJsonString());
        var r = CliProcess.Run(["compare", "--model", _dir], NoPython);
        AssertOneLineInputError(r, "'model.embed_tokens.weight' is [200, 64], the config implies [300, 64] (vocab_size, hidden_size)");
    }

    [Fact]
    public void A_layout_the_config_cannot_split_is_a_usage_error()
    {
        AssertOneLineInputError(CliProcess.Run(["compare", "--model", _dir, "--tp", "3"], NoPython), "--tp 3 does not divide num_attention_heads 4");
    }

    [Fact]
    public void An_empty_run_filter_is_a_usage_error_not_the_whole_catalog()
    {
        // CliFuzzTests drew `run --report DIR '' --offline`: the '' matched every scenario and ran the catalog past the
        // fuzz's 60 s limit under load
        AssertOneLineInputError(CliProcess.Run(["run", "", "--offline"], NoPython), "a filter is empty");
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-5")]
    public void A_reference_timeout_that_is_not_a_positive_number_of_seconds_is_a_usage_error(string seconds)
    {
        AssertOneLineInputError(CliProcess.Run(["compare", "--model", _dir, "--reference-timeout", seconds], NoPython),
            "--reference-timeout must be a positive number of seconds");
    }

    [Fact]
    public void A_corrupt_or_foreign_baseline_report_is_one_line_naming_it_before_anything_runs()
    {
        var baseline = Path.Combine(_dir, "baseline.json");
        File.WriteAllText(baseline, """{"schema_version": 99, "scenarios": []}""");
        var r = CliProcess.Run("run", "--offline", "matmul/2d-x-5d", "--report", Path.Combine(_dir, "out"), "--baseline", baseline);
        AssertOneLineInputError(r, baseline, "schema_version");
        Assert.DoesNotContain("running", r.Stdout);

        File.WriteAllText(baseline, "{\"schema_version\": 1, \"generated_at\": ");
        AssertOneLineInputError(CliProcess.Run("report", "--from", baseline, "--out", Path.Combine(_dir, "out")), baseline, "not valid JSON");
    }

    /// <summary>
    /// The exit code 3 path, planted from the test: the real command tree plus one verb that fails as a bug of ours would,
    /// run by <see cref="Cli.Run(string[], Func{System.CommandLine.RootCommand})"/> (what `harness` runs: Main is
    /// <c>Cli.Run(args)</c>), in this process. The shipped CLI has no such verb (issue 20: test hooks out of production code).
    /// </summary>
    [Fact]
    public void An_internal_error_prints_its_trace_and_exits_3()
    {
        var planted = new System.CommandLine.Command("planted-internal-error");
        planted.SetAction(int (System.CommandLine.ParseResult _) => throw new InvalidOperationException("a planted internal error"));
        var stderr = new StringWriter();
        var before = Console.Error;
        Console.SetError(stderr);
        int code;
        try
        {
            code = Cli.Run(["planted-internal-error"], () =>
            {
                var root = Cli.Build();
                root.Subcommands.Add(planted);
                return root;
            });
        }
        finally
        {
            Console.SetError(before);
        }
        Assert.True(code == 3, $"exit {code}\n{stderr}");
        Assert.Contains("harness planted-internal-error: internal error (a bug in the harness", stderr.ToString());
        Assert.Contains("a planted internal error", stderr.ToString());
        Assert.Contains("   at ", stderr.ToString());
    }

    /// <summary>
    /// A hidden verb or option is a test hook shipped to users (issue 20): the CLI has none (the tests' slow report writes
    /// live in the test host, <see cref="TestHost"/>), and an unknown verb or option is a usage error.
    /// </summary>
    [Fact]
    public void The_shipped_cli_has_no_hidden_verb_or_option()
    {
        var root = Cli.Build();
        Assert.Empty(root.Subcommands.Where(c => c.Hidden).Select(c => c.Name));
        Assert.Empty(root.Subcommands.SelectMany(c => c.Options.Where(o => o.Hidden).Select(o => $"{c.Name} {o.Name}")));
        var r = CliProcess.Run("debug-internal-error");
        Assert.True(r.ExitCode == 2, r.ToString());
        var slow = CliProcess.Run("report", "--from", "report.json", "--out", Path.GetTempPath(), "--slow-writes-ms", "2");
        Assert.True(slow.ExitCode == 2, slow.ToString());
        Assert.Contains("Unrecognized command or argument '--slow-writes-ms'", slow.Stderr);
    }

    /// <summary>Rewrites a safetensors header with renamed tensors (data untouched).</summary>
    internal static void RenameTensors(string path, Func<string, string> rename)
    {
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);
        var header = JsonNode.Parse(bytes.AsSpan(8, (int)n))!.AsObject();
        var renamed = new JsonObject();
        foreach (var (k, v) in header.ToList())
        {
            header.Remove(k);
            renamed[k == "__metadata__" ? k : rename(k)] = v;
        }
        var json = System.Text.Encoding.UTF8.GetBytes(renamed.ToJsonString());
        int pad = (8 - json.Length % 8) % 8;
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((long)(json.Length + pad)));
        fs.Write(json);
        for (int i = 0; i < pad; i++) fs.WriteByte((byte)' ');
        fs.Write(bytes.AsSpan(8 + (int)n));
    }
}

/// <summary>Issue 12: a nightly that goes red. `run --baseline` exits 1 when the report flags a regression.</summary>
public sealed class BaselineExitCodeTests
{
    [Fact]
    public void Run_against_a_baseline_with_a_regression_exits_1()
    {
        var dir = Path.Combine(Path.GetTempPath(), "harness-e2e-baseline-" + Guid.NewGuid().ToString("N"));
        try
        {
            const string id = "llama/tp1/input-ids/fp32,!fault";
            var night1 = CliProcess.Run("run", id, "--offline", "--report", Path.Combine(dir, "night1"));
            Assert.True(night1.ExitCode == 0, night1.ToString());

            // Last night's errors were 1000 times smaller: tonight's, unchanged, grew past the growth factor.
            var baseline = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "night1", "report.json")))!;
            foreach (var m in baseline["scenarios"]!.AsArray().SelectMany(s => s!["modules"]!.AsArray()))
                if (m!["rel_l2"] is JsonValue v && v.GetValueKind() == JsonValueKind.Number) m["rel_l2"] = v.GetValue<double>() / 1000;
            File.WriteAllText(Path.Combine(dir, "baseline.json"), baseline.ToJsonString());

            var night2 = CliProcess.Run("run", id, "--offline", "--report", Path.Combine(dir, "night2"), "--baseline", Path.Combine(dir, "baseline.json"));
            Assert.True(night2.ExitCode == 1, night2.ToString());
            Assert.Contains("REGRESSION llama/tp1/input-ids/fp32", night2.Stdout);
            Assert.True(File.Exists(Path.Combine(dir, "night2", "report.json")));

            var same = CliProcess.Run("run", id, "--offline", "--report", Path.Combine(dir, "night3"), "--baseline", Path.Combine(dir, "night1", "report.json"));
            Assert.True(same.ExitCode == 0, same.ToString());
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>
/// Issue 22: a model too large for the memory there is ends in one line naming what it needs and what would fit, exit 2,
/// before anything loads (no interpreter is even looked for): never an out-of-memory kill minutes later.
/// </summary>
public sealed class CompareMemoryCapTests
{
    [Fact]
    public void A_model_over_the_memory_cap_is_refused_in_one_line_before_loading()
    {
        var model = Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", "tiny-llama-fp32");
        var r = CliProcess.Run(["compare", "--model", model, "--max-memory", "0.25"],
            new Dictionary<string, string?> { ["HARNESS_PYTHON"] = "/nonexistent/python", ["HARNESS_CACHE"] = "/nonexistent" });
        Assert.True(r.ExitCode == 2, r.ToString());
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, r.ToString());
        Assert.Contains("needs about", r.Stderr);
        Assert.Contains("256.0 MiB is available", r.Stderr);
        Assert.Contains("engine", r.Stderr);
        Assert.Contains("float64 oracle (streamed)", r.Stderr);
        // issue 24: the one prediction, weights and this request's tokens at the config's sizes (the prompt check's)
        Assert.Contains("7 prompt and 8 new tokens", r.Stderr);
        Assert.Contains("eager attention scores 4x15x15", r.Stderr);
        Assert.DoesNotContain("the live reference is not available", r.All);   // refused before an interpreter is looked for
        Assert.DoesNotContain("   at ", r.All);
    }
}
