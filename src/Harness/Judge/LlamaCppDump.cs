using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Reports;
using Harness.Runs;

namespace Harness.Judge;

/// <summary>What llamacpp_dump.py wrote: the mapped module records' count, the llama.cpp names with no HF module, the
/// model, and llama.cpp's own choice with its top-k log-probabilities at every step (step 0: after the prompt).</summary>
public sealed record LlamaCppDumpResult(string Directory, int Entries, IReadOnlyList<string> Unmapped, string Description)
{
    /// <summary>llama.cpp's next-token choice and top-k at each step, as a token sequence (the choices are its greedy picks
    /// on the history it was fed: the reference's tokens when teacher-forced).</summary>
    public TokenSequence? Choices { get; init; }
}

/// <summary>
/// llama.cpp module by module: a GGUF's prompt forward and decode steps through libllama with the scheduler's evaluation
/// callback (src/Reference/python/llamacpp_dump.py, run by a worker of the reference interpreter, since Debian forky's
/// libllama needs forky's glibc), its named graph outputs written in the harness dump format under HF's module names (the
/// one map, LLAMA_TO_HF in that file, with the converter's Q/K rotary permutation undone), then judged by
/// <see cref="DumpJudge"/> like any other dump. The context is float32 throughout (no flash attention, f32 K/V cache).
/// <see cref="Judge"/> decodes as `harness run` decodes its engine: HF's greedy tokens first, llama.cpp fed them
/// (teacher-forced, so every decode step is judged on the same history even after a near tie), every (step, module)
/// judged with the oracle verdict, and llama.cpp's own choices judged token by token by the catalog's rule.
/// </summary>
public static class LlamaCppDump
{
    /// <summary>Writes the dump of <paramref name="ggufHostPath"/> on <paramref name="inputIds"/> into a fresh scratch
    /// folder (or <paramref name="outDirectory"/>, which must be one the worker can write): the prompt's forward, then
    /// <paramref name="newTokens"/> - 1 decode steps fed <paramref name="forced"/> (else llama.cpp's own greedy picks).
    /// <paramref name="llamaLayout"/>: Q and K left in llama.cpp's rotary row order (the converter's permutation not
    /// undone; the judge fails them).</summary>
    public static LlamaCppDumpResult Write(ReferenceClient client, string ggufHostPath, IReadOnlyList<long> inputIds, string? outDirectory = null,
        int threads = 1, bool llamaLayout = false, int newTokens = 1, IReadOnlyList<long>? forced = null, int topK = 5)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(inputIds);
        var gguf = Path.GetFullPath(ggufHostPath);
        InputFiles.RequireRegular(gguf, "GGUF file");
        if (inputIds.Count == 0) throw new InputException("--ids", "the prompt has no token");
        if (newTokens < 1) throw new InputException("--max-new-tokens", string.Create(CultureInfo.InvariantCulture, $"must be at least 1, got {newTokens}"));
        var dir = outDirectory ?? client.ScratchDirectory("judge-llamacpp-dump");
        string source;
        using (var s = typeof(ReferenceWorker).Assembly.GetManifestResourceStream("llamacpp_dump.py")
            ?? throw new InvalidOperationException("llamacpp_dump.py is not embedded in Harness.Reference"))
        using (var r = new StreamReader(s))
            source = r.ReadToEnd();
        var args = new JsonObject
        {
            ["gguf"] = client.WorkerPath(gguf),
            ["out_dir"] = client.WorkerPath(dir),
            ["input_ids"] = new JsonArray(inputIds.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
            ["script_source"] = source,
            ["threads"] = threads,
            ["llama_layout"] = llamaLayout,
            ["max_new_tokens"] = newTokens,
            ["top_k"] = topK,
            ["timeout"] = 120,
        };
        if (forced is not null) args["forced"] = new JsonArray(forced.Select(i => (JsonNode)JsonValue.Create(i)).ToArray());
        var reply = client.Invoke("judge_llamacpp_dump", args).Result;
        TokenSequence? choices = null;
        if (reply["generation"] is JsonArray steps && steps.Count > 0)
            choices = new TokenSequence(steps.Select(g => (long)g!["choice"]!).ToArray(),
                steps.Select(g => (IReadOnlyList<TokenLogprob>)g!["topk_ids"]!.AsArray().Zip(g["topk_logprobs"]!.AsArray(),
                    (id, lp) => new TokenLogprob((long)id!, (double)lp!)).ToList()).ToList());
        return new LlamaCppDumpResult(dir, (int)reply["entries"]!,
            reply["unmapped"]!.AsArray().Select(n => (string)n!).ToArray(),
            (string?)reply["engine"]?["model"] ?? "")
        { Choices = choices };
    }

    /// <summary>
    /// `harness judge --gguf`: <paramref name="newTokens"/> greedy tokens as `harness run` decodes its engine. HF's greedy run
    /// (with its float64 oracle) gives the reference's tokens; llama.cpp runs the prompt's forward and is fed those tokens
    /// at decode steps 1 .. newTokens - 1 (teacher forcing: where llama.cpp's own choice would leave the reference's
    /// tokens, the check goes on on the reference's, as the catalog moves onto forced tokens after a near tie), recording
    /// every mapped graph output at every step; <see cref="DumpJudge"/> judges each (step, module) with the oracle verdict
    /// (HF teacher-forced on the same tokens) and names the first divergent one; llama.cpp's choice at each step is
    /// judged token by token against the reference's (<see cref="TokenComparison.Run"/>: a divergence passes only
    /// as a near tie, the steps after it compared on the forced run). The dump stays in <paramref name="outDirectory"/>.
    /// A lossy GGUF (bf16, f16, q8_0, k-quants: any weight not f32) is judged against HF running the GGUF's own weights
    /// (<see cref="GgufWeights"/>, dequantized) with the original checkpoint's float64 oracle, every module and the token
    /// logprobs by <see cref="OracleBound.Quantized"/> (<see cref="OracleBound.QuantizedTokens"/>): C times the quantization's own error, measured per module and run.
    /// </summary>
    public static DumpVerdict Judge(ReferenceClient client, string ggufHostPath, string modelDirectory, IReadOnlyList<long> inputIds,
        string outDirectory, int newTokens = 4, int topK = 5, bool llamaLayout = false)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(inputIds);
        if (newTokens < 1) throw new InputException("--max-new-tokens", string.Create(CultureInfo.InvariantCulture, $"must be at least 1, got {newTokens}"));
        var model = Path.GetFullPath(modelDirectory);
        var shared = client.ShareDirectory(model);
        client.Oracle = true;
        var weights = GgufWeights.Read(client, ggufHostPath, model);
        try
        {
            // the reference: HF on the GGUF's weights where they are rounded (the oracle on the original's), else HF itself
            string? engineWeights = weights.Lossy ? weights.ReferenceDirectory : null;
            var referenceModel = engineWeights is null ? shared : client.ShareDirectory(engineWeights);
            // the reference's greedy tokens: llama.cpp's decode steps are fed them (the tokens of a GGUF are judged in float32)
            var prompt = Tensor.FromArray(inputIds.ToArray(), 1, inputIds.Count);     // [1, T]
            var gen = client.Generate(referenceModel, DType.Float32, prompt, newTokens, topK, oracleModelHostDirectory: engineWeights is null ? null : shared);
            var reference = TokenSequence.FromTopK(gen.Tokens, gen.TopKIds, gen.TopKLogprobs, gen.OracleTopKLogprobs);
            var written = Write(client, ggufHostPath, inputIds, outDirectory, llamaLayout: llamaLayout, newTokens: newTokens,
                forced: gen.Tokens[..^1], topK: topK);
            var verdict = DumpJudge.Run(written.Directory, model, client, DType.Float32, engineWeights);
            var forcedRun = written.Choices ?? throw new InvalidOperationException("llamacpp_dump.py returned no generation");
            var (free, forced) = Runs(reference, forcedRun);
            var tokens = TokenComparison.Run(reference, free, logprobTolerance: TokenComparison.FallbackLogprobTolerance(DType.Float32),
                engineForced: forced, oracleBound: engineWeights is null ? OracleBound.For(DType.Float32) : OracleBound.QuantizedTokens);
            return Verdict(verdict, tokens, reference, free, written, ggufHostPath, weights);
        }
        finally
        {
            client.Release(weights.ReferenceDirectory);
        }
    }

    private static DumpVerdict Verdict(DumpVerdict verdict, TokenReport tokens, TokenSequence reference, TokenSequence free, LlamaCppDumpResult written,
        string ggufHostPath, GgufWeights weights)
    {
        var record = verdict.Record with
        {
            Id = $"judge/gguf/{Path.GetFileName(Path.GetFullPath(ggufHostPath))}",
            Layout = "llama.cpp (libllama, CPU, float32 context)" + (weights.Lossy
                ? $"; GGUF weights {weights.Description}: the reference is HF on them, the oracle HF's original in float64" : ""),
            Passed = verdict.Record.Passed && tokens.Passed,
            Reason = TokenRecord.OneLine(tokens.Passed ? $"{verdict.Record.Reason}; tokens: {tokens.Reason}"
                : verdict.Record.Passed ? $"tokens: {tokens.Reason}" : $"{verdict.Record.Reason}; tokens: {tokens.Reason}"),
            Tokens = TokenRecord.From(tokens, reference, free),
        };
        return verdict with { Record = record, Tokens = tokens, Engine = written, Weights = weights };
    }

    /// <summary>
    /// llama.cpp's free and teacher-forced runs from its choices on the reference's tokens: the free run equals the forced
    /// run up to and including the first step whose choice leaves the reference's tokens (the same history until then, a
    /// deterministic engine); the forced run is given to the token rule only then, as <see cref="TokenComparison.ForcedTokensFor"/>
    /// asks a scenario for it (no divergence: it would repeat the free run step for step).
    /// </summary>
    public static (TokenSequence Free, TokenSequence? Forced) Runs(TokenSequence reference, TokenSequence forcedRun)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(forcedRun);
        int divergent = Enumerable.Range(0, Math.Min(forcedRun.Length, reference.Length)).FirstOrDefault(s => forcedRun.Tokens[s] != reference.Tokens[s], -1);
        return divergent < 0 ? (forcedRun, null)
            : (new TokenSequence(forcedRun.Tokens[..(divergent + 1)], forcedRun.TopK.Take(divergent + 1).ToList()), forcedRun);
    }
}
