using System.CommandLine;
using System.Globalization;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR [--tp N] [--pp N] [--sp] [--dtype fp32|bf16] [--prompt 1,2,3 | --prompt-length N]`:
/// the Llama comparison (layer by layer, token by token) on any HF checkpoint folder, printed as `repro` prints.
/// </summary>
internal static class CompareCommand
{

    public sealed record Options(string Model, int Tp, int Pp, bool Sp, string DType, string? Prompt, int? PromptLength);

    public static Command Create()
    {
        var model = new Option<string>("--model")
        {
            Description = "An HF checkpoint folder: config.json and *.safetensors (sharded with model.safetensors.index.json is fine). Llama architecture for now.",
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

        var command = new Command("compare",
            "Compare the engine with HF transformers on an HF checkpoint folder (Llama architecture for now), layer by layer and token by token, " +
            "printed like `repro`. Needs the live reference. Exit code: 0 when engine and reference agree, 1 when they diverge, 2 on usage errors " +
            "(missing folder/config/weights, unsupported model_type, no interpreter).")
        {
            model, tp, pp, sp, dtype, prompt, promptLength,
        };
        command.Validators.Add(r =>
        {
            if (r.GetResult(prompt) is { Implicit: false } && r.GetResult(promptLength) is { Implicit: false })
                r.AddError("--prompt and --prompt-length are mutually exclusive");
        });
        command.SetAction(r => Run(new Options(r.GetValue(model)!, r.GetValue(tp), r.GetValue(pp), r.GetValue(sp), r.GetValue(dtype)!,
            r.GetValue(prompt), r.GetValue(promptLength))));
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
        // The folder, config.json and the weights are judged before any reference work starts (and before an interpreter
        // is looked for): a problem is one line naming the file and the field or tensor, exit 2 (ModelFolder, Cli).
        ModelFolder.Check(dir, o.Tp, o.Pp, ids);

        var context = CliSupport.LiveContext("compare");
        if (context is null) return ExitCodes.Usage;
        var dtype = o.DType == "bf16" ? DType.BFloat16 : DType.Float32;
        var scenario = LlamaScenario.ForCheckpoint(dir, o.Tp, o.Pp, o.Sp, dtype, ids, o.PromptLength ?? 7);
        return VerboseReport.RunAndPrint(scenario, context);
    }
}
