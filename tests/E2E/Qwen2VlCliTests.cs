using Harness.Reference;

namespace Harness.Tests.E2E;

/// <summary>`harness compare` on a saved Qwen2-VL folder, as a user with a qwen2_vl checkpoint runs it.</summary>
public class Qwen2VlCliTests
{
    [SkippableFact]
    [Trait("Tier", "Live")]
    public void Compare_on_the_tiny_qwen2_vl_checkpoint_with_an_image_at_tp4_agrees()
    {
        var (python, reason) = ReferenceLocator.Find();
        if (python is null && ReferenceLocator.Required) Assert.Fail($"{ReferenceLocator.RequireVariable}=1 but {reason}");
        Skip.If(python is null, reason);
        var r = CliProcess.Run(["compare", "--model", "fixtures/models/tiny-qwen2-vl-fp32", "--tp", "4", "--image"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("model.visual.merger", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
        Assert.Contains("token comparison: PASS", r.Stdout);
        Assert.Contains("logprobs against the float64 oracle", r.Stdout);      // tokens judged by the oracle (issue 21 item 3)
    }

    [Fact]
    public void Compare_on_a_qwen2_vl_config_without_mrope_section_names_the_field()
    {
        var dir = Path.Combine(Path.GetTempPath(), "harness-e2e-qwen2vl-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(dir);
            var config = File.ReadAllText(Path.Combine(CliProcess.RepositoryRoot, "fixtures/models/tiny-qwen2-vl-fp32/config.json"))
                .Replace("\"mrope_section\"", "\"mrope_sections\"", StringComparison.Ordinal);
            File.WriteAllText(Path.Combine(dir, "config.json"), config);
            File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), [0]);
            var r = CliProcess.Run("compare", "--model", dir, "--image");
            Assert.True(r.ExitCode == 2, r.ToString());
            Assert.Contains("text_config.rope_parameters.mrope_section is missing", r.Stderr);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
