using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Runs;

namespace Harness.Judge;

/// <summary>
/// An OpenAI-compatible server's <c>/v1/completions</c> (llama-server, vLLM, SGLang, TGI), asked for greedy completions
/// with the top-k logprobs of every generated token. Two logprob layouts are read, both with token ids:
/// <list type="bullet">
/// <item>llama-server's: <c>logprobs.content[i] = {id, token, logprob, top_logprobs: [{id, token, logprob}]}</c>;</item>
/// <item>OpenAI's legacy one (vLLM, SGLang): <c>logprobs.tokens[i]</c>, <c>token_logprobs[i]</c>, <c>top_logprobs[i] =
/// {token: logprob}</c>, with ids as "token_id:N" strings, which vLLM writes when asked <c>return_tokens_as_token_ids</c>
/// (sent with every request; other servers ignore it).</item>
/// </list>
/// Token text alone cannot be judged (two ids may print alike): such a reply is a bad input naming the field. Every
/// problem with the server (unreachable, an HTTP error, a reply that is not such JSON) is an <see cref="InputException"/>
/// naming the URL and the field: one line, exit 2.
/// </summary>
public sealed class CompletionsEndpoint : IDisposable
{
    private readonly HttpClient _http;

    /// <param name="baseUrl">The server, e.g. http://127.0.0.1:8080 (or with /v1 at the end).</param>
    /// <param name="timeout">The limit for one request.</param>
    public CompletionsEndpoint(string baseUrl, TimeSpan timeout)
    {
        if (!Uri.TryCreate(baseUrl, UriKind.Absolute, out var uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
            throw new InputException(baseUrl, "not an http(s) URL");
        var root = uri.GetLeftPart(UriPartial.Path).TrimEnd('/');
        if (root.EndsWith("/v1", StringComparison.Ordinal)) root = root[..^3];
        Root = root;
        _http = new HttpClient { Timeout = timeout };
        _http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
    }

    /// <summary>The server's root URL (no /v1).</summary>
    public string Root { get; }

    public string CompletionsUrl => Root + "/v1/completions";

    /// <summary>What a completion returned: the tokens with their top-k, why it stopped, and the prompt's token count.</summary>
    public sealed record Completion(TokenSequence Tokens, string? FinishReason, int? PromptTokens, string? SystemFingerprint)
    {
        /// <summary>usage.completion_tokens: how many tokens the server says it generated (null when it does not say).</summary>
        public int? CompletionTokens { get; init; }
    }

    /// <summary>The served model's name from /v1/models (the first one), or null when the server does not say.</summary>
    public string? ServedModel()
    {
        var reply = TryGet(Root + "/v1/models");
        return reply?["data"] is JsonArray { Count: > 0 } data && data[0]?["id"] is JsonValue id && id.TryGetValue<string>(out var s) ? s : null;
    }

    /// <summary>
    /// A greedy completion of a prompt given as token ids (a JSON array of ints) or as text. Returns null when the server
    /// refuses token ids with a 4xx (the caller then sends text); any other failure throws.
    /// </summary>
    public Completion? Complete(long[]? ids, string? text, int maxTokens, int topK, string? model)
    {
        var body = new JsonObject
        {
            ["prompt"] = ids is not null ? new JsonArray(ids.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()) : text,
            ["max_tokens"] = maxTokens,
            ["temperature"] = 0.0,
            ["top_p"] = 1.0,
            ["logprobs"] = topK,
            ["n"] = 1,
            ["stream"] = false,
            ["return_tokens_as_token_ids"] = true,
        };
        if (model is not null) body["model"] = model;
        var (status, reply, raw) = Post(CompletionsUrl, body);
        if (ids is not null && status is >= 400 and < 500) return null;
        if (status is < 200 or >= 300)
            throw new InputException(CompletionsUrl, $"HTTP {status}: {Short(raw)}");
        return Parse(CompletionsUrl, reply!);
    }

    /// <summary>
    /// The server's own tokenization of a text through its /tokenize (llama-server reads "content", vLLM "prompt"; both are
    /// sent), or null when it has no such endpoint or answers without a "tokens" list of ints.
    /// </summary>
    public long[]? Tokenize(string text, string? model)
    {
        var body = new JsonObject { ["content"] = text, ["prompt"] = text, ["add_special"] = true };
        if (model is not null) body["model"] = model;
        var (status, reply, _) = Post(Root + "/tokenize", body, quiet: true);
        if (status is < 200 or >= 300 || reply?["tokens"] is not JsonArray tokens) return null;
        var ids = new long[tokens.Count];
        for (int i = 0; i < ids.Length; i++)
        {
            if (tokens[i] is JsonValue v && v.TryGetValue<long>(out var id)) ids[i] = id;
            else if (tokens[i] is JsonObject o && o["id"] is JsonValue ov && ov.TryGetValue<long>(out var oid)) ids[i] = oid;
            else return null;
        }
        return ids;
    }

    /// <summary>Reads one completion reply (either logprob layout); a missing or malformed field names itself.</summary>
    public static Completion Parse(string url, JsonNode reply)
    {
        var choice = reply["choices"] is JsonArray { Count: > 0 } choices ? choices[0] as JsonObject : null;
        if (choice is null) throw new InputException(url, "the reply has no choices[0]");
        var logprobs = choice["logprobs"] as JsonObject
            ?? throw new InputException(url, "choices[0].logprobs is missing or null: the server must return logprobs (request field \"logprobs\": k)");
        var tokens = new List<long>();
        var topK = new List<IReadOnlyList<TokenLogprob>>();
        if (logprobs["content"] is JsonArray content)
        {
            for (int i = 0; i < content.Count; i++)
            {
                string at = $"choices[0].logprobs.content[{i}]";
                var entry = content[i] as JsonObject ?? throw new InputException(url, $"{at} is not an object");
                long id = Id(url, entry, at);
                double lp = Logprob(url, entry["logprob"], at + ".logprob");
                var list = new List<TokenLogprob>();
                if (entry["top_logprobs"] is JsonArray top)
                    for (int j = 0; j < top.Count; j++)
                    {
                        var t = top[j] as JsonObject ?? throw new InputException(url, $"{at}.top_logprobs[{j}] is not an object");
                        list.Add(new TokenLogprob(Id(url, t, $"{at}.top_logprobs[{j}]"), Logprob(url, t["logprob"], $"{at}.top_logprobs[{j}].logprob")));
                    }
                if (!list.Any(e => e.Token == id)) list.Add(new TokenLogprob(id, lp));   // the chosen token, if outside the top-k
                tokens.Add(id);
                topK.Add(list);
            }
        }
        else if (logprobs["tokens"] is JsonArray legacy)
        {
            var chosenLps = logprobs["token_logprobs"] as JsonArray;
            var tops = logprobs["top_logprobs"] as JsonArray;
            for (int i = 0; i < legacy.Count; i++)
            {
                string at = $"choices[0].logprobs.tokens[{i}]";
                long id = TokenId(url, legacy[i], at);
                var list = new List<TokenLogprob>();
                if (tops?[i] is JsonObject top)
                    foreach (var (key, value) in top)
                        list.Add(new TokenLogprob(TokenId(url, JsonValue.Create(key), $"choices[0].logprobs.top_logprobs[{i}] key"),
                            Logprob(url, value, $"choices[0].logprobs.top_logprobs[{i}][\"{key}\"]")));
                if (!list.Any(e => e.Token == id) && chosenLps?[i] is { } c)
                    list.Add(new TokenLogprob(id, Logprob(url, c, $"choices[0].logprobs.token_logprobs[{i}]")));
                tokens.Add(id);
                topK.Add(list);
            }
        }
        else
        {
            throw new InputException(url, "choices[0].logprobs has neither \"content\" (llama-server) nor \"tokens\" (OpenAI legacy completions)");
        }
        int? promptTokens = reply["usage"]?["prompt_tokens"] is JsonValue p && p.TryGetValue<int>(out var n) ? n : null;
        string? finish = choice["finish_reason"] is JsonValue f && f.TryGetValue<string>(out var fs) ? fs : null;
        string? fingerprint = reply["system_fingerprint"] is JsonValue s && s.TryGetValue<string>(out var ss) ? ss : null;
        int? completionTokens = reply["usage"]?["completion_tokens"] is JsonValue ct && ct.TryGetValue<int>(out var m) ? m : null;
        return new Completion(new TokenSequence(tokens.ToArray(), topK), finish, promptTokens, fingerprint) { CompletionTokens = completionTokens };
    }

    private static long Id(string url, JsonObject entry, string at) =>
        entry["id"] is JsonValue v && v.TryGetValue<long>(out var id) ? id
            : throw new InputException(url, $"{at}.id is missing or not an integer (token text alone cannot be judged: two ids may print alike)");

    /// <summary>"token_id:N" (vLLM's return_tokens_as_token_ids) to N; plain token text is refused, naming the field.</summary>
    private static long TokenId(string url, JsonNode? node, string at)
    {
        string? s = node is JsonValue v && v.TryGetValue<string>(out var str) ? str : null;
        const string prefix = "token_id:";
        if (s is not null && s.StartsWith(prefix, StringComparison.Ordinal)
            && long.TryParse(s.AsSpan(prefix.Length), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long id))
            return id;
        throw new InputException(url,
            $"{at} is token text {JsonSerializer.Serialize(s)}, not an id: the server must return ids (vLLM: return_tokens_as_token_ids, sent with the request)");
    }

    private static double Logprob(string url, JsonNode? node, string at)
    {
        if (node is JsonValue v && v.TryGetValue<double>(out var d)) return d;
        if (node is JsonValue sv && sv.TryGetValue<string>(out var text)   // -Infinity written as a string by some servers
            && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out d)) return d;
        throw new InputException(url, $"{at} is missing or not a number");
    }

    private (int Status, JsonNode? Reply, string Raw) Post(string url, JsonObject body, bool quiet = false)
    {
        using var content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        HttpResponseMessage response;
        try
        {
            response = _http.PostAsync(url, content).GetAwaiter().GetResult();
        }
        catch (HttpRequestException e)
        {
            if (quiet) return (0, null, "");
            throw new InputException(url, $"cannot reach the server: {e.Message}", e);
        }
        catch (TaskCanceledException e)
        {
            if (quiet) return (0, null, "");
            throw new InputException(url, $"no answer within {_http.Timeout.TotalSeconds:F0} s", e);
        }
        using (response)
        {
            var raw = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
            int status = (int)response.StatusCode;
            if (status is < 200 or >= 300) return (status, null, raw);
            try
            {
                return (status, JsonNode.Parse(raw), raw);
            }
            catch (JsonException e)
            {
                if (quiet) return (status, null, raw);
                throw new InputException(url, $"the reply is not JSON ({e.Message}): {Short(raw)}", e);
            }
        }
    }

    private JsonNode? TryGet(string url)
    {
        try
        {
            using var response = _http.GetAsync(url).GetAwaiter().GetResult();
            if (!response.IsSuccessStatusCode) return null;
            return JsonNode.Parse(response.Content.ReadAsStringAsync().GetAwaiter().GetResult());
        }
        catch (HttpRequestException e)
        {
            throw new InputException(url, $"cannot reach the server: {e.Message}", e);
        }
        catch (Exception e) when (e is TaskCanceledException or JsonException)
        {
            return null;
        }
    }

    private static string Short(string raw)
    {
        var line = TokenRecordLine(raw);
        return line.Length <= 300 ? line : line[..300] + "...";
    }

    private static string TokenRecordLine(string raw) => string.Join(' ', raw.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    public void Dispose() => _http.Dispose();
}
