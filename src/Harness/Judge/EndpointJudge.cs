using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Reports;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Judge;

/// <summary>One prompt to judge: its text (through the checkpoint's tokenizer) or its token ids.</summary>
public sealed record JudgePrompt(string? Text, long[]? Ids)
{
    public string Describe => Text is not null ? Quote(Text) : $"ids [{string.Join(",", Ids!)}]";

    internal static string Quote(string s)
    {
        var one = s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal);
        return "\"" + (one.Length <= 60 ? one : one[..57] + "...") + "\"";
    }
}

/// <summary>How the prompt reaches the server: token ids when it takes them (auto), always ids, or always text.</summary>
public enum PromptRoute { Auto, Ids, Text }

/// <summary>The settings of `harness judge --endpoint`.</summary>
public sealed record EndpointJudgeOptions(string Endpoint, string ModelDirectory, IReadOnlyList<JudgePrompt> Prompts)
{
    public int MaxTokens { get; init; } = 16;
    public int TopK { get; init; } = 5;
    public DType DType { get; init; } = DType.Float32;
    public PromptRoute Route { get; init; } = PromptRoute.Auto;
    /// <summary>The "model" field of the requests; null: /v1/models' first id, or none when the server does not say.</summary>
    public string? ServedModel { get; init; }
    public double Margin { get; init; } = TokenComparison.DefaultMargin;
    /// <summary>null: the catalog's value for the dtype (TokenComparison.FallbackLogprobTolerance: no oracle judges an endpoint).</summary>
    public double? LogprobTolerance { get; init; }
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>
    /// The GGUF the server serves (`--served-gguf`), converted from the checkpoint. A lossy one (any weight not f32) is
    /// judged against HF running its own weights (<see cref="GgufWeights"/>, dequantized) with the float64 oracle on the
    /// original checkpoint, its logprobs within <see cref="Comparison.OracleBound.QuantizedTokens"/>' C times the
    /// reference's own error (the quantization's); an f32 one as without it. Null: HF's own weights, no oracle.
    /// </summary>
    public string? ServedGguf { get; init; }
}

/// <summary>One prompt's verdict: the ids both sides saw, how they reached the server, both sequences and the comparison.</summary>
public sealed record PromptVerdict(int Index, JudgePrompt Prompt, long[] PromptIds, string Route, TokenSequence? Reference, TokenSequence? Server,
    TokenReport? Tokens, string? Failure, ScenarioRecord Record)
{
    public bool Passed => Record.Passed;
}

/// <summary>
/// Judges any OpenAI-compatible server token by token against HF transformers on the same checkpoint: for each prompt,
/// the server's greedy completion with its top-k logprobs (<see cref="CompletionsEndpoint"/>) against HF's greedy
/// tokens and top-k logprobs (the reference worker's generate, the loop every scenario uses), by the catalog's rule
/// (<see cref="TokenComparison"/>). The prompt goes as token ids where the server takes them (llama-server, vLLM do);
/// else as text, and the server's tokenization is checked against HF's (its /tokenize where it has one, else the
/// prompt token count it reports). A server that stops at EOS before max_tokens is compared up to HF's EOS.
/// </summary>
public static class EndpointJudge
{
    public static IReadOnlyList<PromptVerdict> Run(EndpointJudgeOptions o, ReferenceClient client, TextWriter? log = null)
    {
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(client);
        var dir = Path.GetFullPath(o.ModelDirectory);
        var shared = client.ShareDirectory(dir);
        var worker = client.WorkerPath(shared);
        string modelName = Path.GetFileName(dir.TrimEnd('/'));
        string modelType = PeekModelType(dir) ?? "unknown";
        double tolerance = o.LogprobTolerance ?? TokenComparison.FallbackLogprobTolerance(o.DType);

        // HF's tokenization of the text prompts (one call), and its eos id for servers that stop at EOS.
        var texts = o.Prompts.Where(p => p.Ids is null).Select(p => p.Text!).ToList();
        var tokenized = client.Invoke("judge_tokenize", new JsonObject
        {
            ["model_dir"] = worker,
            ["texts"] = new JsonArray(texts.Select(t => (JsonNode)JsonValue.Create(t)).ToArray()),
        }).Result;
        var hfIds = new Queue<long[]>(((JsonArray)tokenized["ids"]!).Select(a => ((JsonArray)a!).Select(v => (long)v!).ToArray()));
        long? eos = tokenized["eos_token_id"] is JsonValue e && e.TryGetValue<long>(out var eid) ? eid : null;

        // a lossy served GGUF: the reference is HF on its weights, the float64 oracle HF's original checkpoint
        var weights = o.ServedGguf is null ? null : GgufWeights.Read(client, o.ServedGguf, dir);
        try
        {
            return Run(o, client, log, shared, worker, modelName, modelType, tolerance, hfIds, eos, weights);
        }
        finally
        {
            if (weights is not null) client.Release(weights.ReferenceDirectory);
        }
    }

    private static IReadOnlyList<PromptVerdict> Run(EndpointJudgeOptions o, ReferenceClient client, TextWriter? log, string shared, string worker,
        string modelName, string modelType, double tolerance, Queue<long[]> hfIds, long? eos, GgufWeights? weights)
    {
        string? oracleWeights = weights is { Lossy: true } ? shared : null;
        string referenceModel = weights is { Lossy: true } ? client.ShareDirectory(weights.ReferenceDirectory) : shared;
        if (oracleWeights is not null) client.Oracle = true;
        using var server = new CompletionsEndpoint(o.Endpoint, o.RequestTimeout);
        var served = o.ServedModel ?? server.ServedModel();
        var verdicts = new List<PromptVerdict>();
        for (int i = 0; i < o.Prompts.Count; i++)
        {
            var prompt = o.Prompts[i];
            var ids = prompt.Ids ?? hfIds.Dequeue();
            log?.WriteLine($"prompt {i + 1}/{o.Prompts.Count}: {prompt.Describe} ({ids.Length} tokens)");
            var started = DateTime.UtcNow;
            string route;
            string? failure = null;
            CompletionsEndpoint.Completion? completion = null;
            if (o.Route != PromptRoute.Text)
            {
                completion = server.Complete(ids, null, o.MaxTokens, o.TopK, served);
                route = "token ids";
                if (completion is null && o.Route == PromptRoute.Ids)
                    throw new Engine.IO.InputException(server.CompletionsUrl, "the server refuses a prompt of token ids (--prompt-as ids)");
                if (completion?.PromptTokens is int n && n != ids.Length)
                    failure = $"the server counts {n} prompt tokens for the {ids.Length} ids it was sent";
            }
            else route = "text";
            if (completion is null)
            {
                if (prompt.Text is null)
                    throw new Engine.IO.InputException(server.CompletionsUrl, $"prompt {i + 1} is token ids and the server refuses token-id prompts");
                route = completion is null && o.Route != PromptRoute.Text ? "text (the server refused token ids)" : "text";
                (failure, route) = CheckTokenization(server, prompt.Text, ids, served, route);
                completion = server.Complete(null, prompt.Text, o.MaxTokens, o.TopK, served);
                if (failure is null && completion!.PromptTokens is int n && n != ids.Length)
                    failure = $"the server counts {n} prompt tokens, HF's tokenizer gives {ids.Length}";
            }

            if (failure is null && completion!.CompletionTokens is int generated && generated != completion.Tokens.Length)
                failure = $"the server generated {generated} tokens but returned logprobs for {completion.Tokens.Length}: its steps cannot be aligned with HF's " +
                          "(llama-server merges a token that ends inside a UTF-8 character into the next one's entry)";
            var gen = client.Generate(referenceModel, o.DType, Tensor.FromArray(ids, 1, ids.Length), o.MaxTokens, o.TopK, oracleModelHostDirectory: oracleWeights);
            var reference = oracleWeights is null ? TokenSequence.FromTopK(gen.Tokens, gen.TopKIds, gen.TopKLogprobs)
                : TokenSequence.FromTopK(gen.Tokens, gen.TopKIds, gen.TopKLogprobs, gen.OracleTopKLogprobs);
            var serverTokens = completion!.Tokens;
            string stop = "";
            if (completion.FinishReason == "stop" && serverTokens.Length < reference.Length && eos is long eosId)
            {
                // A server stops at EOS (and may leave the EOS step out): HF decoded on; compare up to HF's EOS.
                int at = Array.IndexOf(reference.Tokens, eosId);
                if (at >= 0 && (at == serverTokens.Length || at + 1 == serverTokens.Length))
                {
                    reference = Truncate(reference, serverTokens.Length);
                    stop = string.Create(CultureInfo.InvariantCulture, $"; the server stopped at EOS (id {eosId}) after {serverTokens.Length} tokens, where HF chose it");
                }
            }
            // After a divergence the check goes on teacher-forced (the catalog's rule, TokenComparison): the server is asked
            // for each step on the reference's tokens before it, one token a request.
            var forced = failure is null && TokenComparison.ForcedTokensFor(reference, serverTokens.Tokens) is long[] on
                ? TeacherForced(server, ids, on, o.TopK, served) : null;
            var report = TokenComparison.Run(reference, serverTokens, o.Margin, tolerance, engineForced: forced,
                oracleBound: oracleWeights is null ? null : Comparison.OracleBound.QuantizedTokens);
            var tokenRecord = TokenRecord.From(report, reference, serverTokens);
            bool passed = failure is null && report.Passed;
            string reason = failure is not null ? failure : $"tokens: {report.Reason}{stop}";
            var record = new ScenarioRecord(
                Id: $"judge/endpoint/{modelName}/prompt-{i + 1}",
                Model: modelType,
                Layout: $"server {server.Root}" + (completion.SystemFingerprint is { } fp ? $" ({fp})" : "") +
                        (weights is { Lossy: true } ? $"; served GGUF weights {weights.Description}: the reference is HF on them, the oracle HF's original in float64" : ""),
                Dtype: Scenario.DTypeTag(o.DType),
                Input: $"{prompt.Describe} as {route}",
                Fault: null,
                ExpectFailure: false,
                Passed: passed,
                Reason: TokenRecord.OneLine(reason),
                ElapsedSeconds: (DateTime.UtcNow - started).TotalSeconds,
                EngineError: null,
                FirstBadModule: null,
                Modules: [],
                Tokens: tokenRecord);
            verdicts.Add(new PromptVerdict(i + 1, prompt, ids, route, reference, serverTokens, report, failure, record));
        }
        var decode = Decoder(client, worker, verdicts);
        return verdicts.Select(v => v with { Tokens = v.Tokens is { } t ? t with { Decode = decode } : null }).ToList();
    }

    /// <summary>
    /// The server's teacher-forced decoding on the reference's tokens: step s is a one-token greedy completion of the prompt
    /// followed by the reference's tokens 0 .. s-1 (llama-server reuses its cached prompt), its choice and top-k kept.
    /// </summary>
    private static TokenSequence TeacherForced(CompletionsEndpoint server, long[] prompt, long[] reference, int topK, string? served)
    {
        var tokens = new long[reference.Length];
        var topk = new List<IReadOnlyList<TokenLogprob>>();
        for (int s = 0; s < reference.Length; s++)
        {
            var one = server.Complete([.. prompt, .. reference[..s]], null, 1, topK, served)
                ?? throw new Engine.IO.InputException(server.CompletionsUrl, "the server refused a token-id prompt in the teacher-forced decoding");
            if (one.Tokens.Length != 1)
                throw new Engine.IO.InputException(server.CompletionsUrl, string.Create(CultureInfo.InvariantCulture,
                    $"asked for one token (teacher-forced step {s}), the server returned {one.Tokens.Length}"));
            tokens[s] = one.Tokens.Tokens[0];
            topk.Add(one.Tokens.TopK[0]);
        }
        return new TokenSequence(tokens, topk);
    }

    /// <summary>The server's tokenization against HF's: (failure or null, the route described).</summary>
    private static (string? Failure, string Route) CheckTokenization(CompletionsEndpoint server, string text, long[] hf, string? served, string route)
    {
        var theirs = server.Tokenize(text, served);
        if (theirs is null) return (null, route + "; the server has no /tokenize: its prompt token count is checked");
        int common = Math.Min(theirs.Length, hf.Length), at = 0;
        while (at < common && theirs[at] == hf[at]) at++;
        if (at == hf.Length && at == theirs.Length) return (null, route + "; /tokenize agrees with HF's tokenizer");
        return (string.Create(CultureInfo.InvariantCulture,
            $"the server's /tokenize gives {theirs.Length} ids, HF's tokenizer {hf.Length}; first difference at position {at} " +
            $"(HF {(at < hf.Length ? hf[at].ToString(CultureInfo.InvariantCulture) : "end")}, server {(at < theirs.Length ? theirs[at].ToString(CultureInfo.InvariantCulture) : "end")})"), route);
    }

    private static TokenSequence Truncate(TokenSequence s, int length) => new(s.Tokens[..length], s.TopK.Take(length).ToList());

    /// <summary>The printed verdict of one prompt: the comparison (first divergence with both top-k), and where the tokens
    /// agree but the logprobs do not, both top-k at the step of the largest difference.</summary>
    public static string Describe(PromptVerdict v)
    {
        var decode = v.Tokens?.Decode;
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(ci, $"prompt {v.Index}: {(v.Passed ? "PASS" : "FAIL")}  {v.Prompt.Describe}, {v.PromptIds.Length} prompt tokens as {v.Route}\n");
        if (v.Failure is not null) sb.Append("  ").Append(v.Failure).Append('\n');
        if (v.Tokens is null) return sb.ToString();
        var report = v.Tokens;
        foreach (var line in report.ToString().TrimEnd('\n').Split('\n')) sb.Append("  ").Append(line).Append('\n');
        if (!report.Passed && report.FirstDivergentStep is null && report.MaxLogprobDiffStep is int step && v.Reference is { } r && v.Server is { } s)
        {
            sb.Append(ci, $"    step {step} top-k, where the logprobs differ most (* = chosen token):\n");
            var rs = r.SortedTopK(step);
            var es = s.SortedTopK(step);
            var rows = new List<string[]> { new[] { "rank", "reference (HF)", "server" } };
            for (int j = 0; j < Math.Max(rs.Count, es.Count); j++)
                rows.Add([(j + 1).ToString(ci), j < rs.Count ? Entry(rs[j], r.Tokens[step]) : "", j < es.Count ? Entry(es[j], s.Tokens[step]) : ""]);
            int w0 = rows.Max(c => c[0].Length), w1 = rows.Max(c => c[1].Length);
            foreach (var c in rows) sb.Append("      ").Append(c[0].PadLeft(w0)).Append("  ").Append(c[1].PadRight(w1)).Append("  ").Append(c[2]).Append('\n');
        }
        return sb.ToString();

        string Entry(TokenLogprob t, long chosen) => string.Create(ci,
            $"{(t.Token == chosen ? "*" : " ")}{t.Token}{(decode is null ? "" : " " + JudgePrompt.Quote(decode(t.Token)))} {t.Logprob:F4}");
    }

    /// <summary>Each id's text through the checkpoint's tokenizer, for display (one worker call for all ids shown).</summary>
    private static Func<long, string> Decoder(ReferenceClient client, string workerDirectory, IEnumerable<PromptVerdict> verdicts)
    {
        var ids = new SortedSet<long>();
        foreach (var v in verdicts)
        {
            if (v.Reference is { } r) foreach (var t in r.Tokens) ids.Add(t);
            if (v.Server is { } s) foreach (var t in s.Tokens) ids.Add(t);
            if (v.Tokens is { } k)
                foreach (var t in (k.ReferenceTopK ?? []).Concat(k.EngineTopK ?? [])) ids.Add(t.Token);
            if (v.Tokens?.MaxLogprobDiffStep is int step && v.Reference is { } rr && v.Server is { } ss)
                foreach (var t in rr.TopK[step].Concat(ss.TopK[step])) ids.Add(t.Token);
        }
        var list = ids.ToArray();
        var text = (JsonArray)client.Invoke("judge_decode", new JsonObject
        {
            ["model_dir"] = workerDirectory,
            ["ids"] = new JsonArray(list.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
        }).Result["text"]!;
        var map = new Dictionary<long, string>();
        for (int i = 0; i < list.Length; i++) map[list[i]] = (string?)text[i] ?? "";
        return id => map.TryGetValue(id, out var s) ? s : "?";
    }

    private static string? PeekModelType(string dir)
    {
        try
        {
            return JsonNode.Parse(Engine.IO.InputFiles.ReadCapped(Path.Combine(dir, "config.json"), Engine.IO.InputFiles.ConfigMaxBytes, "config file"))?["model_type"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
