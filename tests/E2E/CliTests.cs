using Harness.Engine.Runtime;
using Harness.Scenarios;

namespace Harness.Tests.E2E;

/// <summary>The CLI as a process: exit codes and what a user reads. Offline tier: no Python needed.</summary>
public class CliTests
{
    [Fact]
    public void No_verb_prints_the_help_and_is_a_usage_error()
    {
        var r = CliProcess.Run();
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("repro", r.Stderr);
    }

    [Fact]
    public void Version_prints_the_engine_version()
    {
        var r = CliProcess.Run("--version");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.StartsWith("harness ", r.Stdout);
    }

    [Fact]
    public void Help_describes_every_verb()
    {
        var r = CliProcess.Run("--help");
        Assert.True(r.ExitCode == 0, r.ToString());
        foreach (var verb in new[] { "list", "run", "repro", "compare", "fixtures", "bench", "check-kernels" })
            Assert.Contains(verb, r.Stdout);
        var repro = CliProcess.Run("repro", "--help");
        Assert.True(repro.ExitCode == 0, repro.ToString());
        Assert.Contains("--fault", repro.Stdout);
        Assert.Contains("mutation-check", repro.Stdout);
    }

    [Fact]
    public void Unknown_verb_and_bad_option_values_exit_2()
    {
        var verb = CliProcess.Run("frobnicate");
        Assert.True(verb.ExitCode == 2, verb.ToString());
        Assert.Contains("frobnicate", verb.Stderr);
        var growth = CliProcess.Run("run", "--offline", "--growth-factor", "0.5");
        Assert.True(growth.ExitCode == 2, growth.ToString());
        Assert.Contains("--growth-factor", growth.Stderr);
    }

    [Fact]
    public void List_shows_the_catalog_ids()
    {
        var r = CliProcess.Run("list");
        Assert.True(r.ExitCode == 0, r.ToString());
        foreach (var s in ScenarioCatalog.All) Assert.Contains(s.Id, r.Stdout);
        Assert.Contains("sp-residual-first-slice", r.Stdout);
    }

    [Fact]
    public void List_json_is_an_array_of_the_filtered_scenarios()
    {
        var r = CliProcess.Run("list", "gemma4/moe/tp1/", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        var ids = doc.RootElement.EnumerateArray().Select(e => e.GetProperty("id").GetString()).ToList();
        Assert.Equal(ScenarioCatalog.Filter("gemma4/moe/tp1/").Select(s => s.Id), ids);
    }

    [Fact]
    public void List_with_a_filter_matching_nothing_exits_2_with_near_matches()
    {
        var r = CliProcess.Run("list", "nosuchthing");
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("did you mean", r.Stderr);
        foreach (var id in ScenarioCatalog.NearMatches("nosuchthing")) Assert.Contains(id, r.Stderr);
    }

    [Fact]
    public void Run_offline_passes_and_prints_a_summary()
    {
        var r = CliProcess.Run("run", "llama/tp2-sp/input-ids/fp32", "--offline");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("first bad module", r.Stdout);
        Assert.Contains("llama/tp2-sp/input-ids/fp32", r.Stdout);
        Assert.Contains("passed, 0 failed", r.Stdout);
    }

    [Fact]
    public void Run_offline_writes_the_report()
    {
        var dir = Path.Combine(Path.GetTempPath(), "harness-e2e-" + Guid.NewGuid().ToString("N"));
        try
        {
            var r = CliProcess.Run("run", "--offline", "gemma4/moe/tp1/", "--report", dir);
            Assert.True(r.ExitCode == 0, r.ToString());
            var path = Path.Combine(dir, "report.json");
            Assert.True(File.Exists(path), r.ToString());
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
            var scenarios = doc.RootElement.GetProperty("scenarios").EnumerateArray().ToList();
            Assert.Equal(ScenarioCatalog.Filter("gemma4/moe/tp1/").Count, scenarios.Count);
            Assert.All(scenarios, s => Assert.Equal("pass", s.GetProperty("verdict").GetString()));
            var caught = scenarios.Where(s => s.GetProperty("id").GetString()!.Contains("fault=", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(caught);
            Assert.All(caught, c => Assert.Equal("model.layers.0.experts", c.GetProperty("first_bad_module").GetString()));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Run_baseline_without_report_is_a_usage_error()
    {
        var baseline = Path.GetTempFileName();
        try
        {
            var r = CliProcess.Run("run", "--offline", "gemma4/moe/tp1/", "--baseline", baseline);
            Assert.True(r.ExitCode == 2, r.ToString());
            Assert.Contains("--report", r.Stderr);
        }
        finally
        {
            File.Delete(baseline);
        }
    }

    [Fact]
    public void Run_with_a_missing_recording_reports_error_and_exits_2()
    {
        // A fixtures folder without the recording: the scenario cannot run, is reported as ERROR, and the run fails
        // with exit 2 (a missing recording is bad input: it names the file to record).
        var missing = Path.Combine(Path.GetTempPath(), "harness-e2e-empty-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(missing);
        try
        {
            var r = CliProcess.Run(["run", "--offline", "gemma4/moe/tp1/text/fp32"],
                new Dictionary<string, string?> { ["HARNESS_FIXTURES"] = missing });
            Assert.True(r.ExitCode == 2, r.ToString());
            Assert.Contains("ERROR", r.Stdout);
            Assert.Contains("no recorded reference", r.Stdout);
        }
        finally
        {
            Directory.Delete(missing, recursive: true);
        }
    }

    [Fact]
    public void Live_run_without_an_interpreter_says_how_to_get_one()
    {
        var r = CliProcess.Run(["run", "gemma4/moe/tp1/"], new Dictionary<string, string?>
        {
            ["HARNESS_PYTHON"] = "/nonexistent/python", ["HARNESS_CACHE"] = "/nonexistent",
        });
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("HARNESS_PYTHON", r.Stderr);
        Assert.Contains("ci/reference-env.sh", r.Stderr);
        Assert.Contains("--offline", r.Stderr);
    }

    [Fact]
    public void Repro_with_the_sp_fault_names_the_post_attention_layernorm()
    {
        var r = CliProcess.Run("repro", "llama/tp2-sp/input-ids/fp32", "--fault", Faults.SpResidualFirstSlice, "--offline");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("model.layers.0.post_attention_layernorm", r.Stdout);
        Assert.Contains("== first divergent module ==", r.Stdout);
        Assert.Contains("engine shape", r.Stdout);
        Assert.Contains("relative L2 error", r.Stdout);        // the error table
        Assert.Contains("layer comparison: FAIL", r.Stdout);   // the layer table
        Assert.Contains("top-k", r.Stdout);                    // the first divergent token, both sides
    }

    [Fact]
    public void Repro_of_a_passing_scenario_exits_0()
    {
        var r = CliProcess.Run("repro", "llama/tp2-sp/input-ids/fp32", "--offline");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("comparison: PASS", r.Stdout);
    }

    [Fact]
    public void Repro_with_the_matmul_fault_prints_the_shape_error()
    {
        var r = CliProcess.Run("repro", "matmul/gemma4-e2b-4dx3d/bf16", "--fault", Faults.MatmulNoNdBroadcast, "--offline");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("matmul (rank 0)", r.Stdout);
        Assert.Contains("shapes [1, 2, 32, 64] and [2, 64, 16]", r.Stdout);
        Assert.Contains("expected shape [1, 2, 32, 16]", r.Stdout);
    }

    /// <summary>Every injected fault of the earlier issues, reproduced by name, points at the module where it shows first.</summary>
    [Theory]
    [InlineData("llama/tp2-sp-pp2/input-ids/fp32", Faults.SpPpResidualSliced, "model.layers.2")]
    [InlineData("llama/tp2-sp-pp2/prompt-embeds/fp32", Faults.SpPpResidualSliced, "model.layers.2")]
    [InlineData("llama/tp2-sp/prompt-embeds/fp32", Faults.SpResidualFirstSlice, "model.layers.0.post_attention_layernorm")]
    [InlineData("gemma3n/tp2/soft-tokens/fp32", Faults.RowParallelInputIsParallel, "model.embed_vision.embedding_projection")]
    [InlineData("gemma4/moe/tp1/text/fp32", Faults.GeluTanhAsExact, "model.layers.0.experts")]
    [InlineData("qwen2-vl/tp4/image/fp32", Faults.AttentionReshapeHiddenSize, "model.language_model.layers.0.self_attn")]
    public void Repro_of_each_fault_names_its_first_divergent_module(string id, string fault, string module)
    {
        var r = CliProcess.Run("repro", id, "--fault", fault, "--offline");
        Assert.True(r.ExitCode == 1, r.ToString());
        var firstDivergence = r.Stdout[r.Stdout.IndexOf("== first divergent module ==", StringComparison.Ordinal)..];
        Assert.StartsWith($"== first divergent module ==\n{module}", firstDivergence.Replace("\r", ""));
    }

    [Fact]
    public void Repro_of_a_decode_only_fault_names_its_step_module_and_rank()
    {
        // the prefill is right, so no module diverges there; the step grid names decode step 1's layer-0 attention
        var r = CliProcess.Run("repro", "llama/tp1/input-ids/bf16", "--fault", "decode-position-off-by-one", "--offline");
        Assert.True(r.ExitCode == 1, r.ToString());
        var output = r.Stdout.Replace("\r", "");
        Assert.Contains("== first divergent module ==\nnone at the prefill; the first divergent decode step is (step 1, model.layers.0.self_attn, rank 0)", output);
        Assert.Contains("== decode steps ==", output);
        Assert.Contains("first divergent (step, module, rank): (1, model.layers.0.self_attn, 0)", output);
        Assert.Contains("comparison: DIVERGED: first divergent decode step: (step 1, model.layers.0.self_attn, rank 0)", output);
    }

    [Fact]
    public void Repro_with_an_unknown_fault_lists_the_known_faults()
    {
        var r = CliProcess.Run("repro", "x", "--fault", "nosuch");
        Assert.True(r.ExitCode == 2, r.ToString());
        foreach (var (name, description) in Faults.Known)
        {
            Assert.Contains(name, r.Stderr);
            Assert.Contains(description, r.Stderr);
        }
    }

    [Fact]
    public void Repro_with_a_wrong_id_exits_2_with_near_matches()
    {
        var r = CliProcess.Run("repro", "llama/tp2/input-ids", "--offline");
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("llama/tp2/input-ids/fp32", r.Stderr);
    }

    [Fact]
    public void Compare_errors_name_the_path()
    {
        var dir = Path.Combine(Path.GetTempPath(), "harness-e2e-model-" + Guid.NewGuid().ToString("N"));
        try
        {
            var missing = CliProcess.Run("compare", "--model", dir);
            Assert.True(missing.ExitCode == 2, missing.ToString());
            Assert.Contains(dir, missing.Stderr);

            Directory.CreateDirectory(dir);
            var noConfig = CliProcess.Run("compare", "--model", dir);
            Assert.True(noConfig.ExitCode == 2, noConfig.ToString());
            Assert.Contains(Path.Combine(dir, "config.json"), noConfig.Stderr);

            File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type": "gemma3", "vocab_size": 10}""");
            var noWeights = CliProcess.Run("compare", "--model", dir);
            Assert.True(noWeights.ExitCode == 2, noWeights.ToString());
            Assert.Contains("safetensors", noWeights.Stderr);
            Assert.Contains(dir, noWeights.Stderr);

            File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), [0]);
            var unsupported = CliProcess.Run("compare", "--model", dir);
            Assert.True(unsupported.ExitCode == 2, unsupported.ToString());
            Assert.Contains("'gemma3': not supported yet", unsupported.Stderr);

            var both = CliProcess.Run("compare", "--model", dir, "--prompt", "1,2", "--prompt-length", "3");
            Assert.True(both.ExitCode == 2, both.ToString());
            Assert.Contains("mutually exclusive", both.Stderr);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>`harness report` re-renders a report.json, with a baseline, as a nightly job compares with last night's.</summary>
public class ReportVerbTests
{
    [Fact]
    public void Report_re_renders_the_three_files_against_a_baseline()
    {
        var dir = Path.Combine(Path.GetTempPath(), "harness-e2e-" + Guid.NewGuid().ToString("N"));
        try
        {
            var first = CliProcess.Run("run", "gemma4/moe/tp1/text/fp32,!fault", "--offline", "--report", Path.Combine(dir, "night1"));
            Assert.True(first.ExitCode == 0, first.ToString());
            var again = CliProcess.Run("report", "--from", Path.Combine(dir, "night1", "report.json"), "--out", Path.Combine(dir, "night2"),
                "--baseline", Path.Combine(dir, "night1", "report.json"));
            Assert.True(again.ExitCode == 0, again.ToString());
            Assert.Contains("0 regression(s)", again.Stdout);
            foreach (var f in new[] { "report.json", "junit.xml", "index.html" })
                Assert.True(File.Exists(Path.Combine(dir, "night2", f)), $"{f} missing");
            Assert.Contains("id=\"baseline\"", File.ReadAllText(Path.Combine(dir, "night2", "index.html")));

            var missing = CliProcess.Run("report", "--from", Path.Combine(dir, "nope.json"), "--out", Path.Combine(dir, "x"));
            Assert.Equal(2, missing.ExitCode);
            Assert.Contains("nope.json", missing.Stderr);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
