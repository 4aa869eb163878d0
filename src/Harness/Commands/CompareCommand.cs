using System.CommandLine;
using System.Text.Json;
using System.Globalization;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR [--tp N] [--pp N] [--sp] [--dtype fp32|bf16] [--prompt 1,2,3 | --prompt-length N]`:
/// the Llama comparison (layer by layer, token by token) on any HF checkpoint folder, printed as `repro` prints;
/// Gemma3n checkpoints go to <see cref="Gemma3nCompare"/>, Gemma4 ones to <see cref="Gemma4Compare"/>.
/// </summary>
internal static class CompareCommand
{
    /// <summary>model_type values the engine can compare today.</summary>
    public static readonly string[] Supported = ["llama", "qwen2_vl", .. Gemma3nCompare.ModelTypes, .. Gemma4Compare.ModelTypes];

    public sealed record Options(string Model, int Tp, int Pp, bool Sp, string DType, string? Prompt, int? PromptLength)
    {
        /// <summary>--no-oracle: judge by the fixed policies (a model that does not fit twice in memory).</summary>
        public bool NoOracle { get; init; }

        /// <summary>--no-steps: decode judged by its tokens only, not every decode step module by module.</summary>
        public bool NoSteps { get; init; }

        /// <summary>--image (Qwen2-VL): one synthetic image in the prompt.</summary>
        public bool Image { get; init; }

        /// <summary>--device cpu|cuda: where the engine runs (the reference too, when its interpreter sees a GPU).</summary>
        public string Device { get; init; } = "cpu";

        /// <summary>--oracle-whole: the deep-copied float64 twin instead of the streamed oracle (same values, 8 bytes a parameter).</summary>
        public bool OracleWhole { get; init; }

        /// <summary>--text "...": the prompt is this text through the checkpoint's own tokenizer (--chat: its chat template).</summary>
        public string? Text { get; init; }

        /// <summary>--chat: --text as one user message through the tokenizer's chat template.</summary>
        public bool Chat { get; init; }

        /// <summary>--max-memory GIB: the memory the comparison may use (default: what the host or the GPU has free).</summary>
        public double? MaxMemoryGiB { get; init; }
    }

    public static Command Create()
    {
        var model = new Option<string>("--model")
        {
            Description = "An HF checkpoint folder: config.json and *.safetensors (sharded with model.safetensors.index.json is fine). Llama, Gemma4 (gemma4, gemma4_text) or Gemma3n (gemma3n, gemma3n_text; TP only).",
            Required = true,
            HelpName = "DIR",
        };
        var tp = new Option<int>("--tp") { Description = "Tensor-parallel ranks (threads in this process).", DefaultValueFactory = _ => 1, HelpName = "N" };
        var pp = new Option<int>("--pp") { Description = "Pipeline stages.", DefaultValueFactory = _ => 1, HelpName = "N" };
        foreach (var o in new[] { tp, pp })
            o.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<int>() < 1) r.AddError($"{o.Name} must be at least 1");
            });
        var sp = new Option<bool>("--sp") { Description = "Sequence parallelism over the TP ranks." };
        var dtype = new Option<string>("--dtype") { Description = "Compute dtype of both sides.", DefaultValueFactory = _ => "fp32" };
        dtype.AcceptOnlyFromAmong("fp32", "bf16");
        var prompt = new Option<string?>("--prompt") { Description = "Prompt token ids, comma-separated (e.g. 1,2,3).", HelpName = "IDS" };
        prompt.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string?>() is { } text && CliSupport.ParseIds(text) is null)
                r.AddError($"--prompt expects comma-separated non-negative token ids, got '{text}'");
        });
        var promptLength = new Option<int?>("--prompt-length") { Description = "A seeded random prompt of N token ids (default 7).", HelpName = "N" };
        promptLength.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is < 1) r.AddError("--prompt-length must be at least 1");
        });

        var noOracle = new Option<bool>("--no-oracle")
        {
            Description = "Do not run the float64 oracle (for a model that does not fit twice in memory): modules are then judged by the named " +
                          "fixed tolerance policies, and the output says so per module.",
        };
        var noSteps = new Option<bool>("--no-steps")
        {
            Description = "Judge decode by its tokens only: by default every module is also captured and judged at every decode step, engine and " +
                          "reference teacher-forced on the reference's tokens (one more engine generation; the reference's oracle run is the token verdict's).",
        };
        var image = new Option<bool>("--image") { Description = "Qwen2-VL: one synthetic image in the prompt (through HF's image processor)." };
        var device = new Option<string>("--device")
        {
            Description = "Where the engine runs: cpu (default) or cuda (every rank on the one GPU); the reference runs on the GPU too when its " +
                          "interpreter sees one (HARNESS_REFERENCE_DEVICE overrides: cpu, cuda, or auto to spread it with accelerate's device_map).",
            DefaultValueFactory = _ => "cpu",
            HelpName = "cpu|cuda",
        };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var oracleWhole = new Option<bool>("--oracle-whole")
        {
            Description = "Compute the float64 oracle with a deep-copied float64 twin of the model (8 bytes a parameter) instead of streaming it " +
                          "one decoder layer at a time (the default; the same values).",
        };
        var text = new Option<string?>("--text")
        {
            Description = "The prompt as text, through the checkpoint's own tokenizer (tokenizer.json / tokenizer_config.json in the folder); " +
                          "the engine gets the ids HF's tokenizer gives.",
            HelpName = "TEXT",
        };
        var chat = new Option<bool>("--chat") { Description = "With --text: the text as one user message through the tokenizer's chat template (generation prompt added)." };
        var maxMemory = new Option<double?>("--max-memory")
        {
            Description = "GiB the comparison may use (default: the host's MemAvailable, or the GPU's memory with --device cuda); a model " +
                          "predicted not to fit stops before loading, saying what would fit.",
            HelpName = "GIB",
        };
        maxMemory.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<double?>() is <= 0) r.AddError("--max-memory must be positive");
        });

        var command = new Command("compare",
            "Compare the engine with HF transformers on an HF checkpoint folder (Llama; Gemma3n and Gemma4 with --tp only; Qwen2-VL with --tp and --sp), layer by layer and token by token, " +
            "printed like `repro`. Needs the live reference. Exit code: 0 when engine and reference agree, 1 when they diverge, 2 on usage errors " +
            "(missing folder/config/weights, unsupported model_type, no interpreter).")
        {
            model, tp, pp, sp, dtype, prompt, promptLength, noOracle, noSteps, image, device, oracleWhole, maxMemory, text, chat,
        };
        command.Validators.Add(r =>
        {
            int given = (r.GetResult(prompt) is { Implicit: false } ? 1 : 0) + (r.GetResult(promptLength) is { Implicit: false } ? 1 : 0) +
                        (r.GetResult(text) is { Implicit: false } ? 1 : 0);
            if (given > 1) r.AddError("--prompt, --prompt-length and --text are mutually exclusive");
            if (r.GetResult(chat) is { Implicit: false } && r.GetResult(text) is null or { Implicit: true })
                r.AddError("--chat needs --text");
        });
        command.SetAction(r => Run(new Options(r.GetValue(model)!, r.GetValue(tp), r.GetValue(pp), r.GetValue(sp), r.GetValue(dtype)!,
            r.GetValue(prompt), r.GetValue(promptLength))
        {
            NoOracle = r.GetValue(noOracle), NoSteps = r.GetValue(noSteps), Image = r.GetValue(image), Device = r.GetValue(device) ?? "cpu", OracleWhole = r.GetValue(oracleWhole),
            MaxMemoryGiB = r.GetValue(maxMemory), Text = r.GetValue(text), Chat = r.GetValue(chat),
        }));
        return command;
    }


    public static int Run(Options o)
    {
        var dir = Path.GetFullPath(o.Model);
        var ids = o.Prompt is null ? null : CliSupport.ParseIds(o.Prompt)!;
        var configPath = ModelFolder.CheckFiles(dir);                          // folder, config.json, weights: one line naming the path
        if (o.Device == "cuda" && Environment.GetEnvironmentVariable("HARNESS_REFERENCE_DEVICE") is null)
            Environment.SetEnvironmentVariable("HARNESS_REFERENCE_DEVICE", "cuda");      // before the worker starts (--text starts it)
        if (o.Text is not null)
        {
            if (Tokenize(dir, o.Text, o.Chat) is not { } tokenized) return ExitCodes.Usage;
            ids = tokenized;
        }
        var dtype = o.DType == "bf16" ? DType.BFloat16 : DType.Float32;

        // Gemma3n, Gemma4 and Qwen2-VL folders are checked by their own compare (typed configs that name a bad field); the
        // rest is judged by ModelFolder before any reference work starts (and before an interpreter is looked for): a
        // problem is one line naming the file and the field or tensor, exit 2 (ModelFolder, Cli).
        var modelType = PeekModelType(configPath);
        if (modelType is not null && !Supported.Contains(modelType))
            throw new Engine.Config.ConfigException(configPath, "model_type", $"is '{modelType}': not supported yet (supported: {string.Join(", ", Supported)})");
        if (modelType is not null && Gemma4Compare.ModelTypes.Contains(modelType)) return Gemma4Compare.Run(o, dir, configPath, ids);
        if (modelType == "qwen2_vl") return Qwen2VlCompare.Run(o, dir, configPath, ids);
        if (o.Image) return CliSupport.UsageError($"compare: --image needs a qwen2_vl checkpoint; {configPath} is {modelType}");
        if (modelType is not null && Gemma3nCompare.Handles(modelType)) return Gemma3nCompare.Run(o, dir, dtype, ids, configPath);
        ModelFolder.Check(dir, o.Tp, o.Pp, ids);

        return Execute(o, dir, LlamaScenario.ForCheckpoint(dir, o.Tp, o.Pp, o.Sp, dtype, ids, o.PromptLength ?? 7));
    }

    /// <summary>
    /// --text (and --chat) through the checkpoint's own tokenizer in the reference worker (AutoTokenizer, apply_chat_template):
    /// the ids both sides then get, printed; null after printing one line when there is no interpreter or no usable tokenizer.
    /// </summary>
    private static long[]? Tokenize(string dir, string text, bool chat)
    {
        if (CliSupport.LiveContext("compare") is not { Client: { } client }) return null;
        try
        {
            var reply = client.Invoke("tokenize", new System.Text.Json.Nodes.JsonObject
            {
                ["model_dir"] = client.WorkerPath(client.ShareDirectory(dir)), ["text"] = text, ["chat"] = chat,
            });
            var ids = reply.Need("input_ids").ToInt64Array();
            if (ids.Length == 0)
            {
                CliSupport.UsageError($"compare: --text gave no tokens through the tokenizer of {dir}");
                return null;
            }
            Console.WriteLine($"prompt:      {ids.Length} tokens from {(chat ? "the chat template of " : "")}{(string?)reply.Result["tokenizer"]} in {dir}: " +
                              string.Join(",", ids));
            return ids;
        }
        catch (Reference.ReferencePythonException e)
        {
            CliSupport.UsageError($"compare: --text: cannot tokenize with the tokenizer in {dir}: {e.PythonType}: {e.PythonMessage.Split('\n')[0]}");
            return null;
        }
    }

    /// <summary>
    /// What every family's compare ends with: the memory prediction (exit 2 with what would fit, before anything loads), the
    /// live context with the oracle asked for, the scenario on the device asked for, then the run printed as `repro` prints
    /// it, followed by the wall time and both sides' peak host and device memory.
    /// </summary>
    internal static int Execute(Options o, string dir, Scenario scenario)
    {
        var wall = System.Diagnostics.Stopwatch.StartNew();
        scenario = scenario with { JudgeSteps = !o.NoSteps };                     // every decode step per module unless --no-steps
        Engine.Cuda.CudaDevice? gpu = null;
        if (o.Device == "cuda")
        {
            if (!Engine.Cuda.CudaDevice.TryGet(out gpu, out var why))
                return CliSupport.UsageError($"compare --device cuda: no usable GPU: {why}");
            if (CudaScenarios.OnDevice(scenario, "cuda") is not { } onGpu)
                return CliSupport.UsageError($"compare --device cuda: {scenario.Model} has no GPU path yet");
            scenario = onGpu;
            if (Environment.GetEnvironmentVariable("HARNESS_REFERENCE_DEVICE") is null)
                Environment.SetEnvironmentVariable("HARNESS_REFERENCE_DEVICE", "cuda");   // the worker inherits it (it says so if it sees no GPU)
        }
        var memory = CompareMemory.Of(dir, scenario.DType, !o.NoOracle, o.OracleWhole, gpu: gpu is not null);
        long? available = o.MaxMemoryGiB is { } cap ? (long)(cap * (1L << 30)) : gpu is not null ? gpu!.TotalMemory : CompareMemory.HostAvailable();
        if (available is { } avail && memory.Refusal(dir, avail, gpu is not null ? "GPU" : "host") is { } refusal)
            return CliSupport.UsageError(refusal);

        var context = CliSupport.LiveContext("compare")?.WithOracle(!o.NoOracle);
        if (context is null) return ExitCodes.Usage;
        context = context.WithOracleMode(o.OracleWhole ? "whole" : "stream");
        Console.WriteLine($"memory:      predicted {CompareMemory.GiB(memory.Total)} ({memory.Parameters.ToString("N0", CultureInfo.InvariantCulture)} parameters; " +
                          $"oracle {(o.NoOracle ? "off" : o.OracleWhole ? "whole float64 twin" : "streamed, one layer in float64")}), available {(available is { } a ? CompareMemory.GiB(a) : "unknown")}");
        if (gpu is not null) Engine.Cuda.Interop.CudaRuntime.ResetPeakPoolBytes(gpu.Ordinal);
        int code = VerboseReport.RunAndPrint(scenario, context);
        wall.Stop();
        PrintPeaks(wall.Elapsed, gpu, context);
        return code;
    }

    private static void PrintPeaks(TimeSpan wall, Engine.Cuda.CudaDevice? gpu, ScenarioContext context)
    {
        string engineHost = CompareMemory.GiB(PeakResident());
        string engineDevice = gpu is null ? "-" : CompareMemory.GiB(Engine.Cuda.Interop.CudaRuntime.PeakPoolBytes(gpu.Ordinal));
        string refHost = "?", refDevice = "?", refWhere = "?";
        try
        {
            var r = context.Client!.Invoke("memory_stats", new System.Text.Json.Nodes.JsonObject()).Result;
            refHost = r["host_peak_bytes"] is { } h ? CompareMemory.GiB((long)h) : "?";
            refDevice = r["device_peak_bytes"] is { } d && (long)d > 0 ? CompareMemory.GiB((long)d) : "-";
            refWhere = (string?)r["device"] ?? "?";
        }
        catch (Reference.ReferenceException e)
        {
            refWhere = $"(no figures: {e.Message.Split('\n')[0]})";
        }
        Console.WriteLine($"wall time:   {CliSupport.Seconds(wall)}");
        Console.WriteLine($"peak memory: engine host {engineHost}, device {engineDevice}{(gpu is null ? "" : $" ({gpu.Name})")}; " +
                          $"reference host {refHost}, device {refDevice} (reference on {refWhere})");
    }

    /// <summary>This process's peak resident memory (VmHWM), in bytes.</summary>
    private static long PeakResident()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { }
        return Environment.WorkingSet;
    }

    /// <summary>config.json's model_type, or null when the folder, the file or the field is not there or not readable
    /// (ModelFolder.Check then names the problem).</summary>
    private static string? PeekModelType(string configPath)
    {
        try
        {
            // capped like every JSON input (issue 24: a 200 MB config.json was read whole here before HfConfig refused it)
            using var doc = JsonDocument.Parse(Engine.IO.InputFiles.ReadCapped(configPath, Engine.IO.InputFiles.ConfigMaxBytes, "config file"), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("model_type", out var mt) &&
                   mt.ValueKind == JsonValueKind.String ? mt.GetString() : null;
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
