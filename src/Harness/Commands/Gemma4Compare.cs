using Harness.Engine.Models.Gemma4;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR` on a Gemma4 checkpoint: gemma4_text (Gemma4ForCausalLM) or gemma4
/// (Gemma4ForConditionalGeneration, its text decoder under model.language_model), with a text prompt, at --tp N.
/// </summary>
internal static class Gemma4Compare
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "gemma4",
        Title = "Gemma4",
        Contract = ModelContract.Of((weights, config, ctx, plan) => new Gemma4ForCausalLM(weights, Gemma4TextConfig.From(config), ctx, options: plan.Gemma4)),
        ReferenceExtension = "gemma4",                                              // and gemma4_towers for the towers' scenarios
        TinyConfigs = () => TinyGemma4.Shapes.ToDictionary(TinyGemma4.ModelName, TinyGemma4.Config)
            .Concat(TinyGemma4.Shapes.Select(s => KeyValuePair.Create($"{TinyGemma4.ModelName(s)}-mm", TinyGemma4.MultimodalConfig(s))))
            .Append(KeyValuePair.Create(TinyGemma4Towers.ModelName, TinyGemma4Towers.Config())).ToDictionary(),
        Scenarios = () => Gemma4Scenarios.All().Concat(Gemma4TowerScenario.All()),
        ScenarioTypes = [typeof(Gemma4Scenario), typeof(Gemma4MultimodalScenario), typeof(Gemma4TowerScenario)],
        CompareLayouts = "--tp",
        Compare = Run,
        CheckpointScenario = (dir, dtype, ids) => Gemma4Scenario.ForCheckpoint(dir, 1, dtype, ids, ids.Length),
    };

    public static int Run(CompareCommand.Options o, CompareCommand.Checkpoint c)
    {
        var (dir, configPath, ids) = (c.Dir, c.ConfigPath, c.Ids);
        if (o.Image) return CliSupport.UsageError($"compare: --image needs a qwen2_vl checkpoint; {configPath} is a Gemma4");
        if (o.Pp != 1 || o.Sp)
            return CliSupport.UsageError($"compare: Gemma4 runs with tensor parallelism only (--tp N); --pp and --sp are not supported for it yet");
        Gemma4TextConfig config;
        try
        {
            config = Gemma4ForCausalLM.LoadConfig(dir);
        }
        catch (Exception e) when (e is IOException or Engine.Config.ConfigException or FormatException or InvalidOperationException)
        {
            return CliSupport.UsageError($"compare: cannot load {configPath}: {e.Message}");
        }
        if (ids is not null && ids.FirstOrDefault(id => id >= config.VocabSize, -1) is var bad && bad >= 0)
            return CliSupport.UsageError($"compare: prompt token id {bad} is outside the vocabulary ({config.Path}vocab_size {config.VocabSize} in {configPath})");
        if (config.NumAttentionHeads % o.Tp != 0)
            return CliSupport.UsageError($"compare: {config.NumAttentionHeads} attention heads ({config.Path}num_attention_heads in {configPath}) do not split over --tp {o.Tp}");
        // the weights against the tensors the config declares, before any reference work (a mismatch is exit 2, one line)
        Engine.Models.CheckpointValidator.Validate(dir, Gemma4Tensors.Expected(config));
        // the prompt and the generated tokens fit the positions and the memory, before any reference work (issue 24)
        if (ComparePromptFits.Check(o, configPath, ComparePromptFits.Of(config), ids?.Length ?? o.PromptLength ?? Gemma4Scenario.PromptTokens,
                o.NewTokens(Gemma4Scenario.DefaultNewTokens)) is { } refused)
            return refused;

        return CompareCommand.Execute(o, dir, Gemma4Scenario.ForCheckpoint(dir, o.Tp, c.DType, ids, o.PromptLength ?? Gemma4Scenario.PromptTokens));
    }
}
