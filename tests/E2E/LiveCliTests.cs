using Harness.Reference;

namespace Harness.Tests.E2E;

/// <summary>The CLI against the live reference: skipped without an interpreter, failed when HARNESS_REQUIRE_REFERENCE=1.</summary>
[Trait("Tier", "Live")]
public class LiveCliTests
{
    private static void RequireReference()
    {
        var (python, reason) = ReferenceLocator.Find();
        if (python is null && ReferenceLocator.Required)
            Assert.Fail($"{ReferenceLocator.RequireVariable}=1 but {reason}");
        Skip.If(python is null, reason);
    }

    [SkippableFact]
    public void Compare_on_the_tiny_llama_checkpoint_at_tp2_agrees()
    {
        RequireReference();
        var r = CliProcess.Run(["compare", "--model", "fixtures/models/tiny-llama-fp32", "--tp", "2"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("comparison: PASS", r.Stdout);
        Assert.Contains("token comparison: PASS", r.Stdout);
    }

    /// <summary>A saved tiny Gemma3n (model_type gemma3n: decoder and both embedders) compares clean at TP=2.</summary>
    [SkippableFact]
    public void Compare_on_the_tiny_gemma3n_checkpoint_at_tp2_agrees()
    {
        RequireReference();
        var r = CliProcess.Run(["compare", "--model", "fixtures/models/tiny-gemma3n-fp32", "--tp", "2"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("comparison: PASS", r.Stdout);
        Assert.Contains("model.embed_vision.embedding_projection", r.Stdout);
        Assert.Contains("token comparison: PASS", r.Stdout);
    }
}
