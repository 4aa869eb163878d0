using System.Diagnostics;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Reference;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 24, "traces for bad input": a FIFO named config.json hung forever, a config.json linked to /dev/zero ran out of
/// memory after 20 s at 4 GB (JSON inputs had no size cap), a loop of links threw an unnamed IOException. Inputs are now
/// read only when they are regular files below a cap, and each of these is an input error naming the path and what it is.
/// </summary>
public sealed class InputFilesTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-inputs-" + Guid.NewGuid().ToString("N"));

    public InputFilesTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string MakeFifo(string name)
    {
        var path = Path.Combine(_dir, name);
        using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return path;
    }

    private static InputException Fails(Action load)
    {
        var task = Task.Run(load);
        try { task.Wait(TimeSpan.FromSeconds(20)); }
        catch (AggregateException) { }
        Assert.True(task.IsCompleted, "the read hung");
        var e = Assert.IsAssignableFrom<Exception>(task.Exception?.InnerException);
        return Assert.IsType<InputException>(InputErrors.Find(e));
    }

    [Fact]
    public void A_fifo_named_config_json_is_named_and_never_opened()
    {
        var fifo = MakeFifo("config.json");
        var e = Fails(() => HfConfig.Load(fifo));
        Assert.Equal($"{fifo}: is a FIFO (named pipe), not a regular file", e.Message);
    }

    [Fact]
    public void A_config_linked_to_dev_zero_is_a_device_not_read()
    {
        var path = Path.Combine(_dir, "config.json");
        File.CreateSymbolicLink(path, "/dev/zero");
        var e = Fails(() => HfConfig.Load(path));
        Assert.Contains("is a character device, not a regular file", e.Message);
    }

    [Fact]
    public void A_loop_of_links_is_named_as_one()
    {
        var a = Path.Combine(_dir, "config.json");
        var b = Path.Combine(_dir, "other.json");
        File.CreateSymbolicLink(a, b);
        File.CreateSymbolicLink(b, a);
        var e = Fails(() => HfConfig.Load(a));
        Assert.Contains("is a loop of symbolic links", e.Message);
    }

    [Fact]
    public void A_config_over_the_cap_is_refused_with_its_size()
    {
        var path = Path.Combine(_dir, "config.json");
        using (var fs = File.Create(path)) fs.SetLength(InputFiles.ConfigMaxBytes + 1);   // sparse: 16 MiB + 1 of zeros
        var e = Fails(() => HfConfig.Load(path));
        Assert.Contains("a config file may be at most 16,777,216", e.Message);
    }

    [Fact]
    public void A_report_from_dev_zero_is_refused()
    {
        var e = Fails(() => Harness.Reports.AccuracyReport.Load("/dev/zero"));
        Assert.Equal("/dev/zero: is a character device, not a regular file", e.Message);
    }

    [Fact]
    public void A_fifo_named_model_safetensors_is_named_before_the_weights_are_opened()
    {
        var model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32")))
            File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        File.Delete(Path.Combine(model, "model.safetensors"));
        var fifo = MakeFifo(Path.Combine("model", "model.safetensors"));
        var e = Fails(() => Harness.Scenarios.ModelFolder.Check(model));
        Assert.Equal($"{fifo}: is a FIFO (named pipe), not a regular file", e.Message);
    }

    /// <summary>
    /// Issue 24's "every JSON input capped and read only from a regular file", for the readers that still opened their
    /// file as it came: Gemma4's vision and audio configs (File.ReadAllBytes), judge's prompts file (File.ReadAllLines),
    /// a dump's rank index and transformers' model debugger tree (File.ReadAllText), safetensors files outside a model
    /// folder (a dump's, a recorded reference's), a GGUF handed to the worker, and the files HF reads beside the weights
    /// (tokenizer.json, generation_config.json). Each hung forever on a FIFO; each is now named in one error.
    /// </summary>
    [Fact]
    public void Every_other_reader_names_a_fifo_instead_of_blocking_on_it()
    {
        var fifo = MakeFifo("input.json");
        var expected = $"{fifo}: is a FIFO (named pipe), not a regular file";
        Assert.Equal(expected, Fails(() => Harness.Engine.Models.Gemma4.Vision.Gemma4VisionConfig.Load(fifo)).Message);
        Assert.Equal(expected, Fails(() => Harness.Engine.Models.Gemma4.Audio.Gemma4AudioConfig.Load(fifo)).Message);
        Assert.Equal(expected, Fails(() => Harness.Commands.JudgeCommand.ReadPrompts(fifo)).Message);
        Assert.Equal(expected, Fails(() => SafetensorsFile.Open(fifo)).Message);

        var dump = Path.Combine(_dir, "dump");
        Directory.CreateDirectory(dump);
        var index = MakeFifo(Path.Combine("dump", "rank-0.json"));
        var model = Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");
        Assert.Equal($"{index}: is a FIFO (named pipe), not a regular file",
            Fails(() => Harness.Judge.DumpJudge.Run(dump, model, ReferenceClient.Shared)).Message);   // named before the client is asked anything

        var tree = MakeFifo("LlamaForCausalLM" + Harness.Judge.ModelDebuggerDump.TreeSuffix);
        Assert.Equal($"{tree}: is a FIFO (named pipe), not a regular file",
            Fails(() => Harness.Judge.ModelDebuggerDump.Convert(tree, Path.Combine(_dir, "converted"))).Message);

        var gguf = MakeFifo("model.gguf");
        Assert.Equal($"{gguf}: is a FIFO (named pipe), not a regular file",
            Fails(() => Harness.Commands.JudgeCommand.RunGguf(gguf, model, [1, 2], null, null, null)).Message);
    }

    [Fact]
    public void A_fifo_or_a_device_beside_the_weights_is_named_before_the_worker_reads_it()
    {
        var model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32")))
            File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        var tokenizer = MakeFifo(Path.Combine("model", "tokenizer.json"));
        Assert.Equal($"{tokenizer}: is a FIFO (named pipe), not a regular file", Fails(() => Harness.Scenarios.ModelFolder.CheckFiles(model)).Message);
        File.Delete(tokenizer);
        var generation = Path.Combine(model, "generation_config.json");
        File.Delete(generation);
        File.CreateSymbolicLink(generation, "/dev/zero");
        Assert.Equal($"{generation}: is a character device, not a regular file", Fails(() => Harness.Scenarios.ModelFolder.CheckFiles(model)).Message);
        File.Delete(generation);
        File.CreateSymbolicLink(Path.Combine(model, "README.md"), "nowhere");          // a dangling link nothing reads: left alone
        Harness.Scenarios.ModelFolder.CheckFiles(model);
    }

    [Fact]
    public void The_towers_configs_are_capped_like_every_config()
    {
        var path = Path.Combine(_dir, "config.json");
        using (var fs = File.Create(path)) fs.SetLength(200L << 20);                   // sparse: 200 MB of zeros
        Assert.Contains("is 209,715,200 bytes; a config file may be at most 16,777,216", Fails(() => Harness.Engine.Models.Gemma4.Vision.Gemma4VisionConfig.Load(path)).Message);
        Assert.Contains("is 209,715,200 bytes; a config file may be at most 16,777,216", Fails(() => Harness.Engine.Models.Gemma4.Audio.Gemma4AudioConfig.Load(path)).Message);
    }
}

/// <summary>
/// Issue 24, "leftovers": every compare of a folder outside the chroot left three shared-* folders behind (full copies on
/// another filesystem), and catalog runs a folder per model: the chroot's /tmp/harness held 116 after one CI run. The
/// folders a run makes are now named after its process, removed when released or when it exits, and a killed run's are
/// removed by the next run.
/// </summary>
public sealed class ScratchFoldersTests : IDisposable
{
    private readonly string _parent = Path.Combine(Path.GetTempPath(), "harness-scratch-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_parent)) Directory.Delete(_parent, recursive: true);
    }

    [Fact]
    public void A_dead_runs_folders_go_and_a_live_runs_stay()
    {
        Directory.CreateDirectory(_parent);
        var dead = Path.Combine(_parent, "shared-tiny-llama-fp32.run-999999999-0123abcd");   // no such process
        Directory.CreateDirectory(Path.Combine(dead, "inner"));
        File.WriteAllText(Path.Combine(dead, "inner", "model.safetensors"), "x");
        var live = Path.Combine(_parent, $"shared-x.run-{Environment.ProcessId}-0123abcd");
        Directory.CreateDirectory(live);
        var unrelated = Path.Combine(_parent, "my-notes");
        Directory.CreateDirectory(unrelated);

        var made = ScratchFolders.Create(_parent, "shared-tiny-llama-fp32");   // the next run cleans first

        Assert.False(Directory.Exists(dead));
        Assert.True(Directory.Exists(live));
        Assert.True(Directory.Exists(unrelated));
        Assert.Matches(@"shared-tiny-llama-fp32\.run-\d+-[0-9a-f]{32}$", made);
        ScratchFolders.Release(made);
        Assert.False(Directory.Exists(made));
    }

    [Fact]
    public void Model_folder_copies_are_removed_when_disposed()
    {
        var src = Path.Combine(Harness.Scenarios.Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");
        string copy;
        using (var copies = new Harness.Scenarios.ModelFolderCopies())
        {
            copy = copies.Edited(src, c => c["rms_norm_eps"] = 1e-3);
            Assert.True(File.Exists(Path.Combine(copy, "model.safetensors")));
        }
        Assert.False(Directory.Exists(copy));
        Assert.False(Directory.Exists(Path.GetDirectoryName(copy)));
    }
}
