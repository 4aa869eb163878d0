using Harness.Judge;
using Harness.Reports;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// `harness judge --endpoint` against a real server: llama.cpp's llama-server (Debian's llama.cpp-tools) serving the tiny
/// Llama converted by the packaged converter passes token by token against HF; the same GGUF with a wrong RoPE base or a
/// wrong RMSNorm epsilon written into its metadata fails at its first divergent token, both sides' top-k shown.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(JudgeCollection.Name)]
public class EndpointJudgeTests(ITestOutputHelper output)
{
    private static readonly JudgePrompt[] Prompts =
    [
        new("The state of the world is good", null),
        new("Many people work here because", null),
    ];

    private IReadOnlyList<PromptVerdict> Judge(string gguf, PromptRoute route = PromptRoute.Auto, bool float32 = true)
    {
        var model = TinyGgufLlama.Get();
        var client = LiveReference.Client();
        using var server = LlamaServer.Start(client, gguf, float32, worker: TinyGgufLlama.ServerWorker);
        output.WriteLine($"llama-server {server.BuildInfo} on {server.Url} (pid {server.Pid}) serving {Path.GetFileName(gguf)}");
        var verdicts = EndpointJudge.Run(new EndpointJudgeOptions(server.Url, model.ModelDirectory, Prompts) { MaxTokens = 12, Route = route }, client);
        foreach (var v in verdicts) output.WriteLine(EndpointJudge.Describe(v));
        return verdicts;
    }

    [SkippableFact]
    public void Llama_server_on_the_converted_gguf_passes_token_by_token_with_token_id_prompts()
    {
        var verdicts = Judge(TinyGgufLlama.Get().Gguf);
        Assert.All(verdicts, v => Assert.True(v.Passed, EndpointJudge.Describe(v)));
        Assert.All(verdicts, v => Assert.Equal("token ids", v.Route));
        Assert.All(verdicts, v => Assert.Equal(12, v.Server!.Length));
        // the logprobs were compared, not only the tokens
        Assert.All(verdicts, v => Assert.True(v.Tokens!.LogprobPairs >= 12, $"only {v.Tokens.LogprobPairs} logprob pairs compared"));

        // the usual report: one record per prompt, read back as written
        var dir = Path.Combine(Path.GetTempPath(), $"judge-report-{Guid.NewGuid():N}");
        try
        {
            ReportWriter.WriteAll(AccuracyReport.Create(verdicts.Select(v => v.Record).ToList()), dir);
            var back = AccuracyReport.Load(Path.Combine(dir, ReportWriter.JsonFile));
            Assert.Equal(verdicts.Select(v => v.Record.Id), back.Scenarios.Select(s => s.Id));
            Assert.All(back.Scenarios, s => Assert.Equal("identical", s.Tokens!.Verdict));
            Assert.Contains("judge/endpoint/", File.ReadAllText(Path.Combine(dir, ReportWriter.HtmlFile)), StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [SkippableFact]
    public void Text_prompts_are_tokenized_by_the_server_and_checked_against_hf()
    {
        var verdicts = Judge(TinyGgufLlama.Get().Gguf, PromptRoute.Text);
        Assert.All(verdicts, v => Assert.True(v.Passed, EndpointJudge.Describe(v)));
        Assert.All(verdicts, v => Assert.Contains("/tokenize agrees with HF's tokenizer", v.Route, StringComparison.Ordinal));
    }

    [SkippableFact]
    public void A_wrong_rope_base_in_the_gguf_fails_at_the_first_divergent_token_with_both_top_k()
    {
        var verdicts = Judge(TinyGgufLlama.Get().GgufWrongRopeBase);
        AssertCaught(verdicts);
    }

    [SkippableFact]
    public void A_wrong_rms_norm_epsilon_in_the_gguf_fails_at_the_first_divergent_token_with_both_top_k()
    {
        var verdicts = Judge(TinyGgufLlama.Get().GgufWrongEpsilon);
        AssertCaught(verdicts);
    }

    [SkippableFact]
    public void Llama_servers_default_f16_flash_attention_and_kv_cache_are_caught_at_float32_tolerance()
    {
        // llama-server 0.7.0 turns flash attention on by default on the CPU (its kernel rounds through f16) and keeps an f16
        // KV cache: on an f32 GGUF that is ~5e-3 nats off HF float32, over the 1e-3 tolerance of the catalog's token rule.
        var verdicts = Judge(TinyGgufLlama.Get().Gguf, float32: false);
        Assert.Contains(verdicts, v => !v.Passed);
        Assert.All(verdicts.Where(v => !v.Passed), v => Assert.True(v.Tokens!.MaxLogprobDiff > v.Tokens.LogprobTolerance || v.Tokens.FirstDivergentStep is not null,
            EndpointJudge.Describe(v)));
    }

    private static void AssertCaught(IReadOnlyList<PromptVerdict> verdicts)
    {
        var failed = verdicts.Where(v => !v.Passed).ToList();
        Assert.NotEmpty(failed);
        foreach (var v in failed)
        {
            var text = EndpointJudge.Describe(v);
            Assert.Contains("FAIL", text, StringComparison.Ordinal);
            if (v.Tokens!.FirstDivergentStep is int step)
            {
                // both sides' top-k at the first divergent token, most likely first
                Assert.Contains($"first divergence at step {step}", text, StringComparison.Ordinal);
                Assert.NotEmpty(v.Tokens.ReferenceTopK!);
                Assert.NotEmpty(v.Tokens.EngineTopK!);
                Assert.Equal("failed", v.Record.Tokens!.Verdict);
            }
            else
            {
                // the tokens agree over the whole length but the logprobs do not: both top-k at the worst step
                Assert.Contains("where the logprobs differ most", text, StringComparison.Ordinal);
            }
        }
        Assert.Contains(failed, v => v.Tokens!.FirstDivergentStep is not null);
    }
}

/// <summary>The judge tests share the tiny model and start servers one at a time (two cores).</summary>
[CollectionDefinition(Name)]
public class JudgeCollection
{
    public const string Name = "judge";
}
