using System.Text.Json;
using Harness.Engine.Config;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR` on a qwen2_vl checkpoint: Qwen2VLForConditionalGeneration against the engine's port at
/// --tp N (optionally --sp), text-only or (--image) with one synthetic image through HF's image processor; printed as `repro` prints.
/// </summary>
internal static class Qwen2VlCompare
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "qwen2-vl",
        Title = "Qwen2-VL",
        Contract = ModelContract.Of((weights, config, ctx, plan) =>
            new Qwen2VlForConditionalGeneration(weights, Qwen2VlConfig.From(config), ctx, options: plan.Qwen2Vl)),
        ReferenceExtension = "qwen2vl",
        TinyConfigs = () => new Dictionary<string, System.Text.Json.Nodes.JsonObject> { [TinyQwen2Vl.ModelName] = TinyQwen2Vl.Config() },
        Scenarios = Qwen2VlScenarios.All,
        ScenarioTypes = [typeof(Qwen2VlScenario), typeof(Qwen2Vl7BAttentionScenario)],
        CompareLayouts = "--tp, --sp",
        Compare = Run,
        CheckpointScenario = (dir, dtype, ids) => Qwen2VlScenario.ForCheckpoint(dir, 1, dtype, withImage: false, ids, ids.Length),
    };

    public static int Run(CompareCommand.Options o, CompareCommand.Checkpoint c)
    {
        var (dir, configPath, ids) = (c.Dir, c.ConfigPath, c.Ids);
        if (o.Pp != 1)
            return CliSupport.UsageError("compare: Qwen2-VL runs under tensor parallelism (with or without --sp), not with pipeline stages (--pp 1)");
        Qwen2VlConfig config;
        try
        {
            config = Qwen2VlConfig.Load(configPath);
        }
        catch (Exception e) when (e is ConfigException or IOException or JsonException)
        {
            return CliSupport.UsageError($"compare: cannot load {configPath}: {e.Message}");
        }
        if (ids is not null && ids.FirstOrDefault(id => id >= config.Text.VocabSize, -1) is var bad && bad >= 0)
            return CliSupport.UsageError($"compare: prompt token id {bad} is outside the vocabulary (vocab_size {config.Text.VocabSize} in {configPath})");
        foreach (var (what, n) in new[] { ("attention heads", config.Text.NumAttentionHeads), ("vision heads", config.VisionHeads) })
            if (n % o.Tp != 0)
                return CliSupport.UsageError($"compare: {n} {what} are not divisible by --tp {o.Tp}");

        var scenario = Qwen2VlScenario.ForCheckpoint(dir, o.Tp, c.DType, o.Image && o.Media.IsEmpty, ids, o.PromptLength ?? 7, o.Sp);
        if (!o.Media.IsEmpty)
        {
            // --image FILE / --video FILE (and --text, --chat) through the checkpoint's own processor: its ids, pixel values
            // and grids are the prompt of both sides
            if (MediaFiles.Process(dir, o.Text, o.Chat, o.Media, o.Device) is not { } processed) return ExitCodes.Usage;
            scenario = scenario.WithProcessed(processed, o.Media.Describe(), o.Media.Tag());
            if (scenario.PromptIds(config).FirstOrDefault(id => id < 0 || id >= config.Text.VocabSize, -1) is var outside && outside >= 0)
                return CliSupport.UsageError($"compare: the processor in {dir} gave token id {outside}, outside the vocabulary (vocab_size {config.Text.VocabSize} in {configPath})");
        }
        // the prompt (text and image tokens) and the generated tokens fit the positions and the memory, before any reference work (issue 24)
        if (ComparePromptFits.Check(o, configPath, ComparePromptFits.Of(config, configPath), scenario.PromptIds(config).Length, o.NewTokens(Qwen2VlScenario.DefaultNewTokens)) is not { } predicted)
            return ExitCodes.Usage;
        return CompareCommand.Execute(o, dir, scenario, predicted);
    }
}
