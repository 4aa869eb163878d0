using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 24, "long prompts": nothing bounded --prompt-length before the reference ran. A prompt longer than the model's
/// max_position_embeddings ran the whole reference and then reported a divergence; 1,000,000 tokens asked torch for a
/// terabyte. Now both are input errors naming config.json, raised by the scenario's input check (which compare runs
/// before anything else is printed and before any reference work).
/// </summary>
public sealed class PromptFitsTests
{
    private static readonly string Model = Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-llama-fp32");
    private static string ConfigPath => Path.Combine(Model, "config.json");

    [Fact]
    public void A_prompt_past_max_position_embeddings_is_refused_naming_the_field()
    {
        var config = HfConfig.Load(ConfigPath);
        int max = config.Text.MaxPositionEmbeddings!.Value;
        var e = Assert.Throws<InputException>(() => ModelFolder.CheckPromptFits(ConfigPath, config.Text, max, LlamaScenario.DefaultNewTokens, DType.Float32, oracle: true));
        Assert.Contains($"longer than max_position_embeddings ({max})", e.Message);
        ModelFolder.CheckPromptFits(ConfigPath, config.Text, max - LlamaScenario.DefaultNewTokens, LlamaScenario.DefaultNewTokens, DType.Float32, oracle: true);
    }

    [Fact]
    public void A_prompt_whose_reference_would_not_fit_in_memory_is_refused_with_the_estimate()
    {
        // a config that allows the positions, so only memory can refuse it
        var json = File.ReadAllText(ConfigPath).Replace("\"max_position_embeddings\":", "\"max_position_embeddings\": 2000000, \"_was\":", StringComparison.Ordinal);
        var config = HfConfig.Parse(json, ConfigPath);
        var e = Assert.Throws<InputException>(() => ModelFolder.CheckPromptFits(ConfigPath, config.Text, 1_000_000, 8, DType.Float32, oracle: true, availableBytes: 16L << 30));
        Assert.Contains("a prompt of 1000000 tokens needs about", e.Message);
        Assert.Contains("16,384 MiB is available", e.Message);
    }

    [Fact]
    public void The_checkpoint_scenario_checks_the_prompt_before_any_reference_work()
    {
        var scenario = LlamaScenario.ForCheckpoint(Model, 1, 1, false, DType.Float32, null, 1_000_000);
        var e = Assert.Throws<InputException>(() => scenario.CheckInputs(ScenarioContext.Recorded()));
        Assert.StartsWith(ConfigPath, e.Message);
    }
}
