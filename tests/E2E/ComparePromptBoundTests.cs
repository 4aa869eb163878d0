namespace Harness.Tests.E2E;

/// <summary>
/// Issue 24, "long prompts", on the compare paths of Gemma3n, Gemma4 and Qwen2-VL (Llama's is PromptFitsTests): nothing
/// bounded --prompt-length there before the reference ran, so a prompt past max_position_embeddings ran the whole
/// reference and then failed in the engine, and a huge one asked torch for whatever it needed. Now each family's compare
/// refuses it in one line naming config.json and the field, exit 2, before an interpreter is even looked for (the
/// environment below has none: a check that came after the reference could not print this line).
/// </summary>
public sealed class ComparePromptBoundTests
{
    private static readonly Dictionary<string, string?> NoReference = new() { ["HARNESS_PYTHON"] = "/nonexistent/python", ["HARNESS_CACHE"] = "/nonexistent" };

    private static string Fixture(string name) => Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", name);

    private static CliProcess.Result Compare(params string[] args) => CliProcess.Run(["compare", .. args], NoReference);

    private static void AssertOneLine(CliProcess.Result r, params string[] expected)
    {
        Assert.True(r.ExitCode == 2, r.ToString());
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, r.ToString());
        foreach (var e in expected) Assert.Contains(e, r.Stderr);
        Assert.DoesNotContain("   at ", r.All);
        Assert.DoesNotContain("interpreter", r.All);
    }

    // tiny-gemma3n: max_position_embeddings 96 under text_config, 4 generated tokens
    // tiny-gemma4-e2b-like: 256 at the root (gemma4_text), 4 generated
    // tiny-qwen2-vl: 256 under text_config, 6 generated
    [Theory]
    [InlineData("tiny-gemma3n-fp32", 93, "text_config.max_position_embeddings (96)")]
    [InlineData("tiny-gemma4-e2b-like-fp32", 253, "max_position_embeddings (256)")]
    [InlineData("tiny-qwen2-vl-fp32", 251, "text_config.max_position_embeddings (256)")]
    public void A_prompt_length_past_max_position_embeddings_is_refused_naming_the_field(string model, int promptLength, string field)
    {
        var r = Compare("--model", Fixture(model), "--prompt-length", promptLength.ToString(System.Globalization.CultureInfo.InvariantCulture));
        AssertOneLine(r, Path.Combine(Fixture(model), "config.json"), $"a prompt of {promptLength} tokens", $"longer than {field}");
    }

    [Theory]
    [InlineData("tiny-gemma3n-fp32")]
    [InlineData("tiny-gemma4-e2b-like-fp32")]
    [InlineData("tiny-qwen2-vl-fp32")]
    public void A_prompt_whose_reference_would_not_fit_in_memory_is_refused_with_the_estimate(string model)
    {
        // 80 positions fit every model; 100 KiB cannot hold the weights, the scores, caches and logits for them (the one
        // prediction compare holds the run to: weights and tokens)
        var r = Compare("--model", Fixture(model), "--prompt-length", "80", "--max-memory", "0.0001");
        AssertOneLine(r, "a prompt of 80 tokens and", "needs about", "of host memory (engine", "80 prompt and", "eager attention scores", "104.9 KiB is available");
    }

    [Fact]
    public void A_qwen2_vl_image_prompt_counts_its_image_tokens_against_the_positions()
    {
        // 244 text tokens + 6 generated fit 256; the synthetic image adds vision_start, 6 merged image tokens and vision_end
        var model = Fixture("tiny-qwen2-vl-fp32");
        var r = Compare("--model", model, "--prompt-length", "244", "--image");
        AssertOneLine(r, "a prompt of 252 tokens plus 6 generated is longer than text_config.max_position_embeddings (256)");
    }

    [Fact]
    public void A_prompt_that_fits_goes_on_to_the_reference()
    {
        // the same model and a prompt 1 token shorter than the refused one: the bound lets it through (and then the
        // missing interpreter is what stops it)
        var r = Compare("--model", Fixture("tiny-gemma3n-fp32"), "--prompt-length", "92");
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.DoesNotContain("max_position_embeddings", r.All);
    }
}
