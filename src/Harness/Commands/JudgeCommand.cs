using System.CommandLine;
using System.Globalization;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Judge;
using Harness.Reference;
using Harness.Reports;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness judge --endpoint URL --model HF_DIR [--prompts FILE | --text T ... | --ids 1,2,3 ...]`: another engine judged
/// against HF transformers on the same checkpoint (README, "Judging another engine"). --endpoint: any OpenAI-compatible
/// server token by token (<see cref="EndpointJudge"/>). Prints each prompt's verdict, writes the usual report with
/// --report. Exit 0 when every prompt passed, 1 when one failed, 2 on bad input (the folder, the prompts file, a server
/// that cannot be reached or answers without token ids).
/// </summary>
internal static class JudgeCommand
{
    public static Command Create()
    {
        var endpoint = new Option<string?>("--endpoint")
        {
            Description = "An OpenAI-compatible server (llama-server, vLLM, SGLang, TGI), e.g. http://127.0.0.1:8080: judged token by token through its /v1/completions.",
            HelpName = "URL",
        };
        var dump = new Option<string?>("--dump")
        {
            Description = "A module-by-module dump (docs/dump-format.md: harness_dump.py, harness dump, llamacpp_dump.py; or transformers' model debugger output written with use_repr=False): judged module by module, rank by rank, with the float64 oracle verdict.",
            HelpName = "DIR",
        };
        var gguf = new Option<string?>("--gguf")
        {
            Description = "A GGUF file run through libllama (llama.cpp) with its graph evaluation callback on one prompt (--ids, or --text through the checkpoint's tokenizer) and --max-new-tokens greedy steps (fed the reference's tokens): its named graph outputs judged module by module at every step under HF's names, its choices token by token.",
            HelpName = "FILE",
        };
        var dumpOut = new Option<string?>("--dump-out") { Description = "With --gguf: keep llama.cpp's dump in this folder (docs/dump-format.md).", HelpName = "DIR" };
        var model = new Option<string>("--model")
        {
            Description = "The HF checkpoint folder the engine serves (config.json, safetensors, tokenizer): HF's side of the comparison.",
            Required = true,
            HelpName = "HF_DIR",
        };
        var prompts = new Option<string?>("--prompts") { Description = "A UTF-8 file of prompts, one a line (empty lines skipped).", HelpName = "FILE" };
        var text = new Option<string[]>("--text") { Description = "A prompt's text (repeatable).", HelpName = "TEXT", AllowMultipleArgumentsPerToken = false };
        var ids = new Option<string[]>("--ids") { Description = "A prompt as comma-separated token ids (repeatable).", HelpName = "IDS" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Greedy tokens per prompt.", DefaultValueFactory = _ => 16, HelpName = "N" };
        var maxNewTokens = new Option<int>("--max-new-tokens")
        {
            Description = "With --gguf: greedy tokens, the prompt's forward and N-1 decode steps, each judged module by module (llama.cpp fed the reference's tokens).",
            DefaultValueFactory = _ => 4,
            HelpName = "N",
        };
        var topK = new Option<int>("--top-k") { Description = "Logprobs per step (the request's \"logprobs\").", DefaultValueFactory = _ => 5, HelpName = "K" };
        foreach (var o in new[] { maxTokens, maxNewTokens, topK })
            o.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<int>() < 1) r.AddError($"{o.Name} must be at least 1");
            });
        var dtype = new Option<string>("--dtype") { Description = "HF's compute dtype (--dump: by default the dump's own, else fp32).", DefaultValueFactory = _ => "fp32" };
        dtype.AcceptOnlyFromAmong("fp32", "bf16");
        var promptAs = new Option<string>("--prompt-as")
        {
            Description = "How prompts reach the server: token ids where it takes them, else text (auto); always ids; always text (its tokenization is then checked).",
            DefaultValueFactory = _ => "auto",
        };
        promptAs.AcceptOnlyFromAmong("auto", "ids", "text");
        var servedGguf = new Option<string?>("--served-gguf")
        {
            Description = "With --endpoint: the GGUF the server serves (converted from --model). A bf16 or quantized one is judged against HF running its own weights (dequantized) with the float64 oracle on --model's original weights: its logprobs within C times the quantization's own error.",
            HelpName = "FILE",
        };
        var served = new Option<string?>("--served-model") { Description = "The request's \"model\" (default: the first of /v1/models).", HelpName = "NAME" };
        var margin = new Option<double?>("--margin") { Description = $"Near-tie margin in nats at an accepted divergence (default {Runs.TokenComparison.DefaultMargin}).", HelpName = "NATS" };
        var tolerance = new Option<double?>("--logprob-tolerance")
        {
            Description = $"Largest logprob difference on matched steps (default {Runs.TokenComparison.DefaultLogprobTolerance} in fp32, {Runs.TokenComparison.BFloat16LogprobTolerance} in bf16).",
            HelpName = "NATS",
        };
        var timeout = new Option<int>("--timeout") { Description = "Seconds one request may take.", DefaultValueFactory = _ => 120, HelpName = "S" };
        var report = new Option<string?>("--report") { Description = "Write report.json, junit.xml and index.html here (one record per prompt).", HelpName = "DIR" };

        var command = new Command("judge",
            "Judge another engine against HF transformers on the same checkpoint. --endpoint: an OpenAI-compatible server token by token " +
            "(greedy, top-k logprobs, the catalog's token rule); --dump: a module dump of any PyTorch engine (harness_dump.py), module by module and rank by rank. Exit code: 0 when every prompt passed, 1 when one failed, 2 on bad input.")
        {
            endpoint, dump, gguf, dumpOut, model, prompts, text, ids, maxTokens, maxNewTokens, topK, dtype, promptAs, servedGguf, served, margin, tolerance, timeout, report,
        };
        command.Validators.Add(r =>
        {
            int routes = new Option[] { endpoint, dump, gguf }.Count(o => r.GetResult(o) is { Implicit: false });
            if (routes != 1) r.AddError("judge needs one of --endpoint URL, --dump DIR or --gguf FILE");
            if (r.GetResult(servedGguf) is { Implicit: false } && r.GetResult(endpoint) is null) r.AddError("--served-gguf goes with --endpoint (--gguf judges a GGUF's weights on its own)");
        });
        command.SetAction(r =>
        {
            if (r.GetValue(dump) is { } dumpDir)
                return RunDump(dumpDir, r.GetValue(model)!,
                    r.GetResult(dtype) is { Implicit: false } ? (r.GetValue(dtype) == "bf16" ? DType.BFloat16 : DType.Float32) : null, r.GetValue(report));
            if (r.GetValue(gguf) is { } ggufFile)
            {
                var texts = r.GetValue(text) ?? [];
                var idList = r.GetValue(ids) ?? [];
                if (texts.Length + idList.Length != 1) return CliSupport.UsageError("judge --gguf: give one prompt, --ids 1,2,3 or --text TEXT");
                long[]? promptIds = idList.Length == 1
                    ? CliSupport.ParseIds(idList[0]) ?? throw new InputException("--ids", $"expects comma-separated non-negative token ids, got '{idList[0]}'")
                    : null;
                return RunGguf(ggufFile, r.GetValue(model)!, promptIds, promptIds is null ? texts[0] : null, r.GetValue(dumpOut), r.GetValue(report),
                    r.GetValue(maxNewTokens), r.GetValue(topK));
            }
            var list = new List<JudgePrompt>();
            if (r.GetValue(prompts) is { } file) list.AddRange(ReadPrompts(file));
            list.AddRange((r.GetValue(text) ?? []).Select(t => new JudgePrompt(t, null)));
            foreach (var s in r.GetValue(ids) ?? [])
                list.Add(new JudgePrompt(null, CliSupport.ParseIds(s) ?? throw new InputException("--ids", $"expects comma-separated non-negative token ids, got '{s}'")));
            if (list.Count == 0) return CliSupport.UsageError("judge: no prompt (give --prompts FILE, --text TEXT or --ids 1,2,3)");
            var options = new EndpointJudgeOptions(r.GetValue(endpoint)!, r.GetValue(model)!, list)
            {
                MaxTokens = r.GetValue(maxTokens),
                TopK = r.GetValue(topK),
                DType = r.GetValue(dtype) == "bf16" ? DType.BFloat16 : DType.Float32,
                Route = r.GetValue(promptAs) switch { "ids" => PromptRoute.Ids, "text" => PromptRoute.Text, _ => PromptRoute.Auto },
                ServedModel = r.GetValue(served),
                Margin = r.GetValue(margin) ?? Runs.TokenComparison.DefaultMargin,
                LogprobTolerance = r.GetValue(tolerance),
                RequestTimeout = TimeSpan.FromSeconds(r.GetValue(timeout)),
                ServedGguf = r.GetValue(servedGguf),
            };
            return RunEndpoint(options, r.GetValue(report));
        });
        return command;
    }

    /// <summary>One prompt a line; a missing or unreadable file is a bad input naming it.</summary>
    public static IReadOnlyList<JudgePrompt> ReadPrompts(string file)
    {
        var full = Path.GetFullPath(file);
        // a regular file below the cap, or one line naming what it is (issue 24: a FIFO blocked here forever)
        var lines = System.Text.Encoding.UTF8.GetString(InputFiles.ReadCapped(full, InputFiles.ConfigMaxBytes, "prompts file")).Split('\n')
            .Select(l => l.TrimEnd('\r')).ToArray();
        var list = lines.Where(l => l.Trim().Length > 0).Select(l => new JudgePrompt(l, null)).ToList();
        if (list.Count == 0) throw new InputException(full, "the prompts file has no prompt (one a line)");
        return list;
    }


    public static int RunDump(string dumpDir, string modelDir, DType? dtype, string? reportDir)
    {
        ModelFolder.CheckFiles(modelDir);
        if (CliSupport.LiveContext("judge") is null) return ExitCodes.Usage;
        var client = ReferenceClient.Shared;
        return Report(DumpJudge.Run(dumpDir, modelDir, client, dtype), client, reportDir);
    }

    private static int Report(DumpVerdict verdict, ReferenceClient client, string? reportDir)
    {
        Console.Write(DumpJudge.Describe(verdict));
        if (reportDir is not null)
        {
            var versions = client.GetVersions();
            ReportWriter.WriteAll(AccuracyReport.Create([verdict.Record], ReportEnvironment.Capture(versions.Python, versions.Torch, versions.Transformers)), reportDir);
            Console.WriteLine($"report: {Path.Combine(Path.GetFullPath(reportDir), ReportWriter.HtmlFile)}");
        }
        return verdict.Passed ? ExitCodes.Ok : ExitCodes.Failed;
    }

    public static int RunGguf(string ggufFile, string modelDir, long[]? ids, string? text, string? dumpOut, string? reportDir, int newTokens = 4, int topK = 5)
    {
        ModelFolder.CheckFiles(modelDir);
        var gguf = Path.GetFullPath(ggufFile);
        InputFiles.RequireRegular(gguf, "GGUF file");                           // a FIFO would block the worker forever (issue 24)
        if (CliSupport.LiveContext("judge") is null) return ExitCodes.Usage;
        var client = ReferenceClient.Shared;
        if (ids is null)
        {
            var tokenized = client.Invoke("judge_tokenize", new System.Text.Json.Nodes.JsonObject
            {
                ["model_dir"] = client.WorkerPath(client.ShareDirectory(Path.GetFullPath(modelDir))),
                ["texts"] = new System.Text.Json.Nodes.JsonArray(text),
            }).Result;
            ids = tokenized["ids"]![0]!.AsArray().Select(v => (long)v!).ToArray();
        }
        var scratch = client.ScratchDirectory("judge-llamacpp-dump");
        var verdict = LlamaCppDump.Judge(client, gguf, modelDir, ids, scratch, newTokens, topK);
        var written = verdict.Engine!;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"llama.cpp ({written.Description}): {written.Entries} graph outputs mapped to HF modules over {newTokens} step(s); no HF counterpart: {string.Join(", ", written.Unmapped.Distinct())}"));
        if (dumpOut is not null)
        {
            Directory.CreateDirectory(dumpOut);
            foreach (var f in Directory.GetFiles(scratch)) File.Copy(f, Path.Combine(dumpOut, Path.GetFileName(f)), overwrite: true);
            Console.WriteLine($"dump: {Path.GetFullPath(dumpOut)}");
        }
        return Report(verdict, client, reportDir);
    }

    public static int RunEndpoint(EndpointJudgeOptions options, string? reportDir)
    {
        ModelFolder.CheckFiles(options.ModelDirectory);                        // one line naming the folder or file
        if (CliSupport.LiveContext("judge") is null) return ExitCodes.Usage;  // the reference interpreter, or why not
        var client = ReferenceClient.Shared;
        var verdicts = EndpointJudge.Run(options, client, Console.Error);
        foreach (var v in verdicts) Console.Write(EndpointJudge.Describe(v));
        int passed = verdicts.Count(v => v.Passed);
        Console.WriteLine($"{passed} of {verdicts.Count} prompts passed ({options.Endpoint} against HF on {Path.GetFullPath(options.ModelDirectory)})");
        if (reportDir is not null)
        {
            var versions = client.GetVersions();
            var written = ReportWriter.WriteAll(AccuracyReport.Create(verdicts.Select(v => v.Record).ToList(),
                ReportEnvironment.Capture(versions.Python, versions.Torch, versions.Transformers)), reportDir);
            Console.WriteLine($"report: {Path.Combine(Path.GetFullPath(reportDir), ReportWriter.HtmlFile)} ({written.PassedCount} passed, {written.FailedCount} failed)");
        }
        return passed == verdicts.Count ? ExitCodes.Ok : ExitCodes.Failed;
    }
}
