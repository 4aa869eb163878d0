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
        Assert.StartsWith(ConfigPath + ": a prompt of 1000000 tokens and 8 generated on this model (185,408 parameters at fp32) needs about", e.Message);
        Assert.Contains("eager attention scores 4x1000008x1000008", e.Message);
        Assert.Contains("16.0 GiB is available", e.Message);
        Assert.Contains("would fit: a prompt of at most ", e.Message);         // the shorter prompt that fits is named
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>
    /// Issue 24's "one memory prediction": the prompt check predicted the reference's scores, caches and logits, and
    /// compare predicted the weights with a fixed allowance for the rest: two figures for one run, neither the whole. Now
    /// the prompt check makes compare's prediction (<see cref="Harness.Commands.CompareMemory"/>) with the config's sizes,
    /// and compare prints and holds the device to it. The tiny Llama's figure, term by term from its config and headers.
    /// </summary>
    [Fact]
    public void The_prompt_check_predicts_the_whole_run_weights_and_tokens_as_one_figure()
    {
        var config = HfConfig.Load(ConfigPath);
        var m = ModelFolder.CheckPromptFits(ConfigPath, config.Text, 7, 8, DType.Float32, oracle: true);
        // headers: 4 layers of 43,136 (q 96x64, k and v 48x64, o 64x96, gate and up 128x64, down 64x128, two norms of 64),
        // embed_tokens 200x64 (tied: no lm_head), the final norm 64
        const long layer = 96 * 64 + 2 * 48 * 64 + 64 * 96 + 3 * 128 * 64 + 2 * 64, parameters = 4 * layer + 200 * 64 + 64;
        Assert.Equal(185_408, parameters);
        Assert.Equal(parameters, m.Parameters);
        long engine = parameters * 4 * 3 / 2, reference = parameters * 4, oracle = (layer + 64 + 200 * 64) * 8;   // streamed: a layer, the rest, the table
        // 15 positions: each side's KV cache (2 kv heads x head_dim 24, 4 layers), eager scores 4x15x15, MLP rows
        // 8 x 15 x max(64, 128), logits 15x200; the float64 oracle twice one side; records 15 x (4 layers x 16 x 64 + 200)
        // elements at 4 + 4 + 8 bytes
        long kv = 2L * 4 * 2 * 24 * 4 * 15, forward = 4L * 15 * 15 * 4 + 8L * 15 * 128 * 4 + 15L * 200 * 4;
        long records = 15L * (4 * 16 * 64 + 200) * 16;
        long tokens = records + 2 * (kv + forward) + 2 * (kv + forward);
        Assert.Equal(tokens, m.TokenBytes);
        Assert.Equal(engine + reference + oracle + tokens + Harness.Commands.CompareMemory.Overhead + (engine + reference) / 20, m.Total);
        Assert.Equal(1_077_567_968, m.Total);
        // the same request's compare (steps judged, streamed oracle) refuses on this figure: one byte less is refused
        Assert.Throws<InputException>(() => ModelFolder.CheckPromptFits(ConfigPath, config.Text, 7, 8, DType.Float32, oracle: true, availableBytes: m.Total - 1));
        ModelFolder.CheckPromptFits(ConfigPath, config.Text, 7, 8, DType.Float32, oracle: true, availableBytes: m.Total);
    }

    [Fact]
    public void The_checkpoint_scenario_checks_the_prompt_before_any_reference_work()
    {
        var scenario = LlamaScenario.ForCheckpoint(Model, 1, 1, false, DType.Float32, null, 1_000_000);
        var e = Assert.Throws<InputException>(() => scenario.CheckInputs(ScenarioContext.Recorded()));
        Assert.StartsWith(ConfigPath, e.Message);
    }
}
