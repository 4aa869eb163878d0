using Harness.Engine.Runtime;

namespace Harness.Tests.E2E;

/// <summary>
/// Seed bug 4 at the size users run (issue 22 item 7): a Llama under TP=2 with SP and PP=2 fed prompt embeds needs a
/// rank-aware residual slice and an all-gather across stages; the catalog checked it only on seeded unit-normal embeds of
/// the tiny model, and `compare` on a checkpoint fed input ids only. `compare --prompt-embeds` hands both sides the prompt
/// ids' rows of the checkpoint's own embed_tokens as inputs_embeds: clean it passes, and each residual fault is caught at
/// the catalog's module.
/// </summary>
public sealed class ComparePromptEmbedsTests
{
    private static readonly string[] Layout = ["compare", "--model", "fixtures/models/tiny-llama-fp32", "--tp", "2", "--sp", "--pp", "2", "--prompt-embeds"];

    [Trait("Tier", "Live")]
    [SkippableTheory]
    [InlineData(null, null)]
    [InlineData(Faults.SpResidualFirstSlice, "model.layers.0.post_attention_layernorm")]      // LlamaScenarios' module for it
    [InlineData(Faults.SpPpResidualSliced, "model.layers.2")]                                // the second stage's first layer
    public void Tp2_sp_pp2_on_prompt_embeds_passes_clean_and_names_each_residual_fault_at_its_module(string? fault, string? module)
    {
        LiveCliTests.RequireReference();
        var r = CliProcess.Run(fault is null ? Layout : [.. Layout, "--fault", fault], null, timeoutSeconds: 600);
        Assert.Contains("tp2-sp-pp2/prompt-embeds-7/fp32", r.Stdout);
        Assert.Contains("the prompt as inputs_embeds", r.Stdout);
        Assert.DoesNotContain("model.embed_tokens (rank", r.Stdout);         // HF skips embed_tokens when given inputs_embeds
        if (fault is null)
        {
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains("comparison: PASS", r.Stdout);
            Assert.Contains("token comparison: PASS", r.Stdout);
        }
        else
        {
            Assert.True(r.ExitCode == 1, r.ToString());
            Assert.Contains($"fault '{fault}' caught at {module}\n", r.Stdout);
        }
    }

    [Theory]
    [InlineData("tiny-gemma4-e2b-like-fp32", "Gemma4")]
    [InlineData("tiny-qwen2-vl-fp32", "Qwen2-VL")]
    public void Prompt_embeds_on_a_family_whose_compare_feeds_ids_is_one_line(string model, string title)
    {
        var r = CliProcess.Run(["compare", "--model", $"fixtures/models/{model}", "--prompt-embeds"],
            new Dictionary<string, string?> { ["HARNESS_PYTHON"] = "/nonexistent/python", ["HARNESS_CACHE"] = "/nonexistent" });
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains($"--prompt-embeds needs a Llama checkpoint", r.Stderr);
        Assert.Contains($"is {title}", r.Stderr);
    }
}
