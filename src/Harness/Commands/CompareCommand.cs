using System.Text.Json.Nodes;
using System.CommandLine;
using System.Text.Json;
using System.Globalization;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR [--tp N] [--pp N] [--sp] [--dtype fp32|bf16] [--prompt 1,2,3 | --prompt-length N] [--fault NAME]`:
/// the comparison (layer by layer, token by token) on an HF checkpoint folder of any registered family
/// (<see cref="ModelFamilies"/>: config.json's model_type picks the family's compare), printed as `repro` prints.
/// </summary>
internal static class CompareCommand
{
    /// <summary>model_type values the engine can compare: every registered family's.</summary>
    public static IReadOnlyList<string> Supported => ModelFamilies.ModelTypes;

    /// <summary>The checkpoint a family's compare runs on: the folder, its config.json, the prompt ids (null: seeded), the dtype.</summary>
    public sealed record Checkpoint(string Dir, string ConfigPath, long[]? Ids, DType DType);

    public sealed record Options(string Model, int Tp, int Pp, bool Sp, string DType, string? Prompt, int? PromptLength)
    {
        /// <summary>--no-oracle: judge by the fixed policies (a model that does not fit twice in memory).</summary>
        public bool NoOracle { get; init; }

        /// <summary>--no-steps: decode judged by its tokens only, not every decode step module by module.</summary>
        public bool NoSteps { get; init; }

        /// <summary>What runs the final scenario (fault planted, on its context) instead of the printed comparison: `harness
        /// dump --model` writes the engine's module outputs of the same run (<see cref="Judge.EngineDump"/>). Null: compare.</summary>
        public Func<Scenario, ScenarioContext, int>? Then { get; init; }

        /// <summary>--image (Qwen2-VL): one synthetic image in the prompt.</summary>
        public bool Image { get; init; }

        /// <summary>--image FILE / --video FILE: the user's picture, through the checkpoint's own processor (<see cref="MediaFiles"/>).</summary>
        public string? ImageFile { get; init; }

        /// <inheritdoc cref="ImageFile"/>
        public string? VideoFile { get; init; }

        /// <summary>--audio FILE.wav (Gemma4, Gemma3n): the user's sound through the checkpoint's own feature extractor.</summary>
        public string? AudioFile { get; init; }

        /// <summary>Whether the prompt carries files for the processor (--image FILE, --video, --audio).</summary>
        public bool HasFiles => ImageFile is not null || VideoFile is not null || AudioFile is not null;

        /// <summary>The files of --image FILE / --video FILE as read and checked (set by <see cref="Run"/>).</summary>
        public MediaFiles.Request Media { get; init; } = new([], []);

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

        /// <summary>--reference-timeout S: seconds one reference op may take (default: <see cref="ReferenceTimeout"/>'s scale).</summary>
        public int? ReferenceTimeoutSeconds { get; init; }

        /// <summary>--fault NAME: a catalog fault planted in the engine's model (<see cref="Engine.Models.FaultMap"/>), the reference untouched.</summary>
        public string? Fault { get; init; }

        /// <summary>--max-new-tokens N: greedy tokens decoded and judged (null: the family's default, <see cref="Scenario.NewTokens"/>).</summary>
        public int? MaxNewTokens { get; init; }

        /// <summary>--prompt-embeds (Llama): the prompt ids' rows of the checkpoint's embed_tokens given to both sides as inputs_embeds.</summary>
        public bool PromptEmbeds { get; init; }

        /// <summary>The tokens the compare generates: --max-new-tokens, else the family's default.</summary>
        public int NewTokens(int familyDefault) => MaxNewTokens ?? familyDefault;
    }

    public static Command Create()
    {
        var model = new Option<string>("--model")
        {
            Description = "An HF checkpoint folder: config.json and *.safetensors (sharded with model.safetensors.index.json is fine). " +
                          string.Join("; ", ModelFamilies.All.Select(f => $"{f.Title} ({string.Join(", ", f.Contract.ModelTypes)}; {f.CompareLayouts})")) + ".",
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
        var image = new Option<string?>("--image")
        {
            Description = "Qwen2-VL: an image in the prompt. --image FILE: the file through the checkpoint's own processor (AutoProcessor " +
                          "from the folder: its tokenizer, image processor and, with --chat, chat template), with --text after it; " +
                          "--image alone: one seeded synthetic image through HF's image processor.",
            Arity = ArgumentArity.ZeroOrOne,
            HelpName = "FILE",
        };
        var video = new Option<string?>("--video")
        {
            Description = "Qwen2-VL, Gemma4: a video file (any format ffmpeg reads) in the prompt, through the checkpoint's own processor (Gemma4: " +
                          "its video processor's frames through the engine's vision tower), with --text after it.",
            HelpName = "FILE",
        };
        var audio = new Option<string?>("--audio")
        {
            Description = "Gemma4, Gemma3n: a WAV file (integer PCM at the feature extractor's sampling rate) in the prompt, through the " +
                          "checkpoint's own processor (its audio feature extractor; the audio tokens expanded as HF expands them), with --text after it.",
            HelpName = "FILE.wav",
        };
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

        var referenceTimeout = new Option<int?>("--reference-timeout")
        {
            Description = "Seconds one reference op (the prefill with its captures, the greedy run with every step's) may take before " +
                          "the worker is stopped as hung (default: 300 s per 250 M parameters on the CPU, per 10 B on a GPU; at least 300 s).",
            HelpName = "S",
        };
        referenceTimeout.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is <= 0) r.AddError("--reference-timeout must be a positive number of seconds");
        });

        var fault = new Option<string?>("--fault")
        {
            Description = "Plant a catalog fault in the engine's model (the reference untouched), to see where the comparison catches it: " +
                          string.Join("; ", ModelFamilies.All.Select(f => $"{f.Title}: {string.Join(", ", f.CompareFaults.Select(s => s.Fault).Distinct())}")) +
                          ". A fault the checkpoint's family has no site for, or that its layout cannot show, is a usage error.",
            HelpName = "NAME",
        };
        fault.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string?>() is { } name && !Engine.Runtime.Faults.Known.ContainsKey(name))
                r.AddError($"--fault: unknown fault '{name}'; known: {string.Join(", ", Engine.Runtime.Faults.Known.Keys.Order(StringComparer.Ordinal))}");
        });

        var maxNewTokens = new Option<int?>("--max-new-tokens")
        {
            Description = "Greedy tokens to decode after the prompt (default: the family's, 4 to 8), each judged by its token and, unless " +
                          "--no-steps, every module at its decode step; prompt plus new tokens must fit the config's max_position_embeddings.",
            HelpName = "N",
        };
        maxNewTokens.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is < 1) r.AddError("--max-new-tokens must be at least 1");
        });

        var promptEmbeds = new Option<bool>("--prompt-embeds")
        {
            Description = "Llama: hand both sides the prompt as inputs_embeds (the prompt ids' rows of the checkpoint's own " +
                          "model.embed_tokens.weight, what HF's get_input_embeddings() gives) instead of input_ids.",
        };

        var command = new Command("compare",
            "Compare the engine with HF transformers on an HF checkpoint folder (" +
            string.Join("; ", ModelFamilies.All.Select(f => $"{f.Title} with {f.CompareLayouts}")) + "), layer by layer and token by token, " +
            "printed like `repro`. Needs the live reference. Exit code: 0 when engine and reference agree, 1 when they diverge, 2 on usage errors " +
            "(missing folder/config/weights, unsupported model_type, no interpreter).")
        {
            model, tp, pp, sp, dtype, prompt, promptLength, noOracle, noSteps, image, device, oracleWhole, maxMemory, text, chat, fault, video, maxNewTokens, promptEmbeds,
            referenceTimeout, audio,
        };
        command.Validators.Add(r =>
        {
            int given = (r.GetResult(prompt) is { Implicit: false } ? 1 : 0) + (r.GetResult(promptLength) is { Implicit: false } ? 1 : 0) +
                        (r.GetResult(text) is { Implicit: false } ? 1 : 0);
            if (given > 1) r.AddError("--prompt, --prompt-length and --text are mutually exclusive");
            bool files = r.GetResult(image) is { Implicit: false } i && i.GetValueOrDefault<string?>() is not null || r.GetResult(video) is { Implicit: false } ||
                         r.GetResult(audio) is { Implicit: false };
            if (r.GetResult(chat) is { Implicit: false } && r.GetResult(text) is null or { Implicit: true } && !files)
                r.AddError("--chat needs --text (or --image FILE / --video FILE / --audio FILE)");
            if (files && (r.GetResult(prompt) is { Implicit: false } || r.GetResult(promptLength) is { Implicit: false }))
                r.AddError("--image FILE, --video FILE and --audio FILE take their text from --text (the processor makes the ids), not --prompt or --prompt-length");
        });
        command.SetAction(r => Run(new Options(r.GetValue(model)!, r.GetValue(tp), r.GetValue(pp), r.GetValue(sp), r.GetValue(dtype)!,
            r.GetValue(prompt), r.GetValue(promptLength))
        {
            NoOracle = r.GetValue(noOracle), NoSteps = r.GetValue(noSteps), Image = r.GetResult(image) is { Implicit: false }, ImageFile = r.GetValue(image), VideoFile = r.GetValue(video), AudioFile = r.GetValue(audio), Device = r.GetValue(device) ?? "cpu", OracleWhole = r.GetValue(oracleWhole),
            MaxMemoryGiB = r.GetValue(maxMemory), Text = r.GetValue(text), Chat = r.GetValue(chat), Fault = r.GetValue(fault),
            MaxNewTokens = r.GetValue(maxNewTokens), PromptEmbeds = r.GetValue(promptEmbeds),
            ReferenceTimeoutSeconds = r.GetValue(referenceTimeout),
        }));
        return command;
    }


    public static int Run(Options o)
    {
        var dir = Path.GetFullPath(o.Model);
        var ids = o.Prompt is null ? null : CliSupport.ParseIds(o.Prompt)!;
        var configPath = ModelFolder.CheckFiles(dir);                          // folder, config.json, weights: one line naming the path
        // The family's compare checks its folder (typed configs that name a bad field, the weights against the tensors the
        // config declares) before any reference work starts: a problem is one line naming the file and the field or tensor,
        // exit 2 (ModelFolder, Cli). A folder with no readable model_type is the first family's (Llama's ModelFolder names it).
        var modelType = PeekModelType(configPath);
        var family = modelType is null ? ModelFamilies.All[0] : ModelFamilies.ForModelType(modelType)
            ?? throw new Engine.Config.ConfigException(configPath, "model_type", $"is '{modelType}': not supported yet (supported: {string.Join(", ", Supported)})");
        if (o.Fault is not null && (FaultProblem(family, o) ?? FaultChangesNothing(family, o.Fault, configPath)) is { } problem)
            return CliSupport.UsageError($"compare --fault {o.Fault}: {problem}");
        if (o.HasFiles)
            o = o with { Media = MediaFiles.Read(o.ImageFile, o.VideoFile, o.AudioFile) };   // regular files under a cap, one line naming a bad one
        if (o.Text is not null && o.Media.IsEmpty)
        {
            if (Tokenize(dir, o.Text, o.Chat, o.Device) is not { } tokenized) return ExitCodes.Usage;
            ids = tokenized;
        }
        var dtype = o.DType == "bf16" ? DType.BFloat16 : DType.Float32;

        if (MediaProblem(modelType, o) is { } media)                            // before any family's own checks: what its compare cannot take
            return CliSupport.UsageError($"compare: {media.Option} needs {media.Needs}; " +
                                         $"{CliInputs.Escape(configPath)} is {CliInputs.Escape(modelType ?? "of no model_type")}, which {media.Why}");
        if (o.PromptEmbeds && family.Name != "llama")
            return CliSupport.UsageError($"compare: --prompt-embeds needs a Llama checkpoint (its compare feeds inputs_embeds); {CliInputs.Escape(configPath)} is {family.Title}");
        return family.Compare(o, new Checkpoint(dir, configPath, ids, dtype));
    }

    /// <summary>
    /// Why --fault cannot be planted in a compare of this family at this layout (null: it can): the family has no site for
    /// it in the model class its compare builds (<see cref="Engine.Models.FaultMap"/>), or the layout cannot show it.
    /// </summary>
    internal static string? FaultProblem(ModelFamily family, Options o)
    {
        // the classes this compare builds: the family's model, and with files the multimodal model and the towers they run through
        var runs = (o.HasFiles ? family.MediaModels(o) : []).Prepend(family.Contract.Model).Distinct().ToList();
        var site = runs.Select(m => Engine.Models.FaultMap.In(o.Fault!, family.Name, m)).FirstOrDefault(s => s is not null);
        if (site is null)
        {
            var elsewhere = Engine.Models.FaultMap.Of(family.Name).Where(s => s.Fault == o.Fault).Select(s => s.Model).ToList();
            var can = family.CompareFaults.Select(s => s.Fault).Distinct().ToList();
            return (elsewhere.Count > 0
                       ? $"{family.Title} has it in {string.Join(" and ", elsewhere)}, which compare does not run (it runs {string.Join(" and ", runs)})"
                       : $"{family.Title} has no site for it") +
                   $"; faults compare plants in {family.Title}: {(can.Count == 0 ? "none" : string.Join(", ", can))}";
        }
        return site.LayoutProblem(o.Tp, o.Pp, o.Sp) is { } layout ? $"{layout} (got --tp {o.Tp} --pp {o.Pp}{(o.Sp ? " --sp" : "")})" : null;
    }

    /// <summary>
    /// Why a config-edit fault would change nothing in this checkpoint (null: it changes something, or it is no config edit):
    /// `rope-theta-default` on a model whose rope_theta is 10000 already plants no bug, and a comparison that then passes
    /// would read as "the check missed it" (seen on a TinyLlama-1.1B-sized model, rope_theta 10000).
    /// </summary>
    internal static string? FaultChangesNothing(ModelFamily family, string fault, string configPath)
    {
        if (Engine.Models.FaultMap.In(fault, family.Name, family.Contract.Model)?.Plan.ConfigEdit is not { } edit) return null;
        JsonObject before;
        try
        {
            before = JsonNode.Parse(Engine.IO.InputFiles.ReadCapped(configPath, Engine.IO.InputFiles.ConfigMaxBytes, "config file"),
                documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
                ?? throw new JsonException("not an object");
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;                                                           // the family's own config checks name it
        }
        var after = (JsonObject)before.DeepClone();
        edit(after);
        return JsonNode.DeepEquals(before, after)
            ? $"{CliInputs.Escape(configPath)} already has what the fault sets ({Engine.Runtime.Faults.Known[fault]}): it would plant no bug"
            : null;
    }

    /// <summary>
    /// The media option a checkpoint's compare cannot take, with what it needs and why this one cannot, for the one-line
    /// refusal (null: it takes them all). Qwen2-VL takes --image (a file or the synthetic one) and --video; Gemma4
    /// (Gemma4ForConditionalGeneration) --image FILE or --video FILE, and --audio, through the engine's own towers (not an
    /// image and a video together: the vision tower's modules are judged on one input); Gemma3n --image FILE and --audio,
    /// through the engine's own towers (timm's MobileNetV5 and the USM conformer; every tower module judged), no --video.
    /// </summary>
    internal static (string Option, string Needs, string Why)? MediaProblem(string? modelType, Options o)
    {
        const string pictures = "a checkpoint whose compare takes pictures (qwen2_vl, gemma4, gemma3n)";
        const string videos = "a checkpoint whose compare takes videos (qwen2_vl, gemma4)";
        const string sound = "a checkpoint whose compare takes audio (gemma4, gemma3n)";
        return modelType switch
        {
            "qwen2_vl" when o.AudioFile is not null => ("--audio", sound, "has no audio tower"),
            "qwen2_vl" => null,
            "gemma4" when o.VideoFile is not null && o.ImageFile is not null =>
                ("--video with --image", "a qwen2_vl checkpoint", "compare judges its vision tower's modules on one input: an image or a video"),
            "gemma4" when o.Image && o.ImageFile is null => ("--image without a FILE", "a qwen2_vl checkpoint (its synthetic image)", "takes an image file: --image FILE"),
            "gemma4" => null,
            "gemma3n" when o.VideoFile is not null =>
                ("--video", videos, "has no video path: Gemma3nProcessor takes images and audio"),
            "gemma3n" when o.Image && o.ImageFile is null => ("--image without a FILE", "a qwen2_vl checkpoint (its synthetic image)", "takes an image file: --image FILE"),
            "gemma3n" => null,
            _ when o.Image || o.VideoFile is not null => (o.VideoFile is not null ? "--video" : "--image", o.VideoFile is not null ? videos : pictures,
                modelType is "gemma4_text" or "gemma3n_text" ? "is a text-only checkpoint (no towers)" : "takes text only"),
            _ when o.AudioFile is not null => ("--audio", sound,
                modelType is "gemma4_text" or "gemma3n_text" ? "is a text-only checkpoint (no towers)" : "takes text only"),
            _ => null,
        };
    }

    /// <summary>
    /// --text (and --chat) through the checkpoint's own tokenizer in the reference worker (AutoTokenizer, apply_chat_template):
    /// the ids both sides then get, printed; null after printing one line when there is no interpreter or no usable tokenizer.
    /// </summary>
    private static long[]? Tokenize(string dir, string text, bool chat, string device)
    {
        if (CliSupport.LiveContext("compare", device) is not { Client: { } client }) return null;
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
    /// <paramref name="predicted"/>: the family's prompt check's prediction (<see cref="ComparePromptFits.Check"/>: the
    /// weights and this request's tokens, from the config's sizes, the real prompt with its image and audio tokens).
    internal static int Execute(Options o, string dir, Scenario scenario, CompareMemory predicted)
    {
        var wall = System.Diagnostics.Stopwatch.StartNew();
        if (o.Fault is not null)                                                   // planted in the engine only; judged as a plain comparison
            scenario = scenario with { Fault = o.Fault, ExpectedFirstBadModule = null, Id = Scenario.WithFault(scenario.Id, o.Fault) };
        scenario = scenario with { JudgeSteps = !o.NoSteps };                     // every decode step per module unless --no-steps
        if (o.MaxNewTokens is { } newTokens) scenario = scenario with { NewTokens = newTokens };   // bounded by the family's prompt check
        Engine.Cuda.CudaDevice? gpu = null;
        if (o.Device == "cuda")
        {
            if (!Engine.Cuda.CudaDevice.TryGet(out gpu, out var why))
                return CliSupport.UsageError($"compare --device cuda: no usable GPU: {why}");
            if (CudaScenarios.OnDevice(scenario, "cuda") is not { } onGpu)
                return CliSupport.UsageError($"compare --device cuda: {scenario.Model} has no GPU path yet");
            scenario = onGpu;
        }
        var memory = predicted with { Gpu = gpu is not null, NewTokens = scenario.NewTokens };
        long? available = o.MaxMemoryGiB is { } cap ? (long)(cap * (1L << 30)) : gpu is not null ? gpu!.TotalMemory : CompareMemory.HostAvailable();
        if (available is { } avail && memory.Refusal(dir, avail, gpu is not null ? "GPU" : "host") is { } refusal)
            return CliSupport.UsageError(refusal);

        var context = CliSupport.LiveContext("compare", o.Device)?.WithOracle(!o.NoOracle);   // the reference on the GPU too (HARNESS_REFERENCE_DEVICE overrides)
        if (context is null) return ExitCodes.Usage;
        context = context.WithOracleMode(o.OracleWhole ? "whole" : "stream");
        Console.WriteLine($"memory:      predicted {CompareMemory.GiB(memory.Total)} ({memory.Parameters.ToString("N0", CultureInfo.InvariantCulture)} parameters, {scenario.NewTokens} new tokens; " +
                          $"oracle {(o.NoOracle ? "off" : o.OracleWhole ? "whole float64 twin" : "streamed, one layer in float64")}), available {(available is { } a ? CompareMemory.GiB(a) : "unknown")}");
        if (gpu is not null) Engine.Cuda.Interop.CudaRuntime.ResetPeakPoolBytes(gpu.Ordinal);
        var client = context.Client!;                                               // the process's one client: its timeout put back after
        var timeoutBefore = client.OpTimeout;
        client.OpTimeout = ReferenceTimeout(memory.Parameters, gpu is not null, o.ReferenceTimeoutSeconds);
        int code;
        try { code = o.Then?.Invoke(scenario, context) ?? VerboseReport.RunAndPrint(scenario, context); }
        finally { client.OpTimeout = timeoutBefore; }
        wall.Stop();
        PrintPeaks(wall.Elapsed, gpu, context);
        return code;
    }

    /// <summary>
    /// How long one reference op may take: <paramref name="given"/> seconds, else 300 s per 250 M parameters on the CPU
    /// (TinyLlama-1.1B's greedy run with every step captured and the float64 oracle took over 300 s on this 2-core
    /// machine under load, and the worker was killed as hung) or per 10 B on a GPU, never under the worker's 300 s.
    /// </summary>
    internal static TimeSpan ReferenceTimeout(long parameters, bool gpu, int? given)
    {
        if (given is { } s) return TimeSpan.FromSeconds(s);
        double per = gpu ? 10e9 : 250e6;
        return TimeSpan.FromSeconds(300 * Math.Max(1.0, Math.Ceiling(parameters / per)));
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
    internal static string? PeekModelType(string configPath)
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
