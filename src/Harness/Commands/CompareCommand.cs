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

        /// <summary>--image (Qwen2-VL): one synthetic image in the prompt.</summary>
        public bool Image { get; init; }
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
            if (r.GetValueOrDefault<string?>() is { } text && ParseIds(text) is null)
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
        var image = new Option<bool>("--image") { Description = "Qwen2-VL: one synthetic image in the prompt (through HF's image processor)." };

        var command = new Command("compare",
            "Compare the engine with HF transformers on an HF checkpoint folder (Llama; Gemma3n and Gemma4 with --tp only; Qwen2-VL with --tp and --sp), layer by layer and token by token, " +
            "printed like `repro`. Needs the live reference. Exit code: 0 when engine and reference agree, 1 when they diverge, 2 on usage errors " +
            "(missing folder/config/weights, unsupported model_type, no interpreter).")
        {
            model, tp, pp, sp, dtype, prompt, promptLength, noOracle, image,
        };
        command.Validators.Add(r =>
        {
            if (r.GetResult(prompt) is { Implicit: false } && r.GetResult(promptLength) is { Implicit: false })
                r.AddError("--prompt and --prompt-length are mutually exclusive");
        });
        command.SetAction(r => Run(new Options(r.GetValue(model)!, r.GetValue(tp), r.GetValue(pp), r.GetValue(sp), r.GetValue(dtype)!,
            r.GetValue(prompt), r.GetValue(promptLength)) { NoOracle = r.GetValue(noOracle), Image = r.GetValue(image) }));
        return command;
    }

    private static long[]? ParseIds(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) return null;
        var ids = new long[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!long.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i])) return null;
        return ids;
    }

    public static int Run(Options o)
    {
        var dir = Path.GetFullPath(o.Model);
        var ids = o.Prompt is null ? null : ParseIds(o.Prompt)!;
        var configPath = ModelFolder.CheckFiles(dir);                          // folder, config.json, weights: one line naming the path
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

        var context = CliSupport.LiveContext("compare")?.WithOracle(!o.NoOracle);
        if (context is null) return ExitCodes.Usage;
        var scenario = LlamaScenario.ForCheckpoint(dir, o.Tp, o.Pp, o.Sp, dtype, ids, o.PromptLength ?? 7);
        return VerboseReport.RunAndPrint(scenario, context);
    }

    /// <summary>config.json's model_type, or null when the folder, the file or the field is not there or not readable
    /// (ModelFolder.Check then names the problem).</summary>
    private static string? PeekModelType(string configPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("model_type", out var mt) &&
                   mt.ValueKind == JsonValueKind.String ? mt.GetString() : null;
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
