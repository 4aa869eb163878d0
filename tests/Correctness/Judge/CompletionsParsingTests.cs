using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Judge;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// The two logprob layouts `harness judge --endpoint` reads (llama-server's and OpenAI's legacy one with vLLM's
/// "token_id:N"), and the replies it must refuse with one line naming the field (exit 2), never judge wrongly.
/// </summary>
public class CompletionsParsingTests
{
    private const string Url = "http://127.0.0.1:1/v1/completions";

    [Fact]
    public void Llama_server_content_entries_give_ids_and_top_k_per_step()
    {
        var reply = JsonNode.Parse("""
            {"choices":[{"text":"ab","finish_reason":"length","logprobs":{"content":[
              {"id":7,"token":"a","logprob":-0.5,"top_logprobs":[{"id":7,"token":"a","logprob":-0.5},{"id":9,"token":"b","logprob":-1.25}]},
              {"id":4,"token":"b","logprob":-2.0,"top_logprobs":[{"id":5,"token":"c","logprob":-1.0}]}]}}],
             "usage":{"prompt_tokens":3,"completion_tokens":2},"system_fingerprint":"b11669-Debian"}
            """)!;
        var c = CompletionsEndpoint.Parse(Url, reply);
        Assert.Equal([7L, 4L], c.Tokens.Tokens);
        Assert.Equal(-1.25, c.Tokens.LogprobOf(0, 9));
        Assert.Equal(-2.0, c.Tokens.LogprobOf(1, 4));   // the chosen token outside the top-k is kept with its own logprob
        Assert.Equal((3, 2, "length"), (c.PromptTokens!.Value, c.CompletionTokens!.Value, c.FinishReason));
    }

    [Fact]
    public void OpenAI_legacy_logprobs_with_vllm_token_ids_are_read()
    {
        var reply = JsonNode.Parse("""
            {"choices":[{"text":"x","finish_reason":"length","logprobs":{"tokens":["token_id:12","token_id:3"],
              "token_logprobs":[-0.1,-3.5],"top_logprobs":[{"token_id:12":-0.1,"token_id:40":-2.5},{"token_id:8":-0.7}]}}]}
            """)!;
        var c = CompletionsEndpoint.Parse(Url, reply);
        Assert.Equal([12L, 3L], c.Tokens.Tokens);
        Assert.Equal(-2.5, c.Tokens.LogprobOf(0, 40));
        Assert.Equal(-3.5, c.Tokens.LogprobOf(1, 3));
    }

    [Theory]
    [InlineData("""{"choices":[{"logprobs":{"tokens":["Hello"],"token_logprobs":[-1],"top_logprobs":[{"Hello":-1}]}}]}""", "choices[0].logprobs.tokens[0] is token text \"Hello\", not an id")]
    [InlineData("""{"choices":[{"logprobs":null}]}""", "choices[0].logprobs is missing or null")]
    [InlineData("""{"choices":[]}""", "no choices[0]")]
    [InlineData("""{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-1}]}}]}""", "choices[0].logprobs.content[0].id is missing")]
    [InlineData("""{"choices":[{"logprobs":{"content":[{"id":1,"logprob":"x"}]}}]}""", "choices[0].logprobs.content[0].logprob is missing or not a number")]
    public void A_reply_the_judge_cannot_align_is_a_bad_input_naming_the_field(string json, string expected)
    {
        var e = Assert.Throws<InputException>(() => CompletionsEndpoint.Parse(Url, JsonNode.Parse(json)!));
        Assert.Contains(Url, e.Message, StringComparison.Ordinal);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void An_unreachable_server_is_a_bad_input_naming_its_url_not_a_hang()
    {
        // port 1 on the loopback: nothing listens, the connection is refused at once
        using var endpoint = new CompletionsEndpoint("http://127.0.0.1:1", TimeSpan.FromSeconds(10));
        var e = Assert.Throws<InputException>(() => endpoint.Complete([1, 2], null, 4, 2, null));
        Assert.StartsWith("http://127.0.0.1:1/v1/completions: cannot reach the server", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("ftp://host/x")]
    [InlineData("not a url")]
    public void A_url_that_is_not_http_is_refused(string url) =>
        Assert.Throws<InputException>(() => new CompletionsEndpoint(url, TimeSpan.FromSeconds(1)));

    [Fact]
    public void A_base_url_with_v1_is_the_same_server()
    {
        using var a = new CompletionsEndpoint("http://127.0.0.1:8080/v1/", TimeSpan.FromSeconds(1));
        using var b = new CompletionsEndpoint("http://127.0.0.1:8080", TimeSpan.FromSeconds(1));
        Assert.Equal("http://127.0.0.1:8080/v1/completions", a.CompletionsUrl);
        Assert.Equal(a.CompletionsUrl, b.CompletionsUrl);
    }
}
