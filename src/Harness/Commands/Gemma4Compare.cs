using Harness.Engine.Models.Gemma4;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR` on a Gemma4 checkpoint: gemma4_text (Gemma4ForCausalLM) or gemma4
/// (Gemma4ForConditionalGeneration, its text decoder under model.language_model), with a text prompt, at --tp N.
/// On a gemma4 folder, --image FILE (or --video FILE) and --audio FILE.wav go through the checkpoint's own processor
/// (Gemma4Processor: its image or video processor and audio feature extractor, the soft-token placeholders expanded as HF
/// expands them) and the engine runs Gemma4ForConditionalGeneration with its own vision and audio towers on the same pixel
/// values, video frames and features
/// (<see cref="Gemma4MultimodalScenario.ForCheckpoint"/>).
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
        MediaModels = o => [
            "Gemma4ForConditionalGeneration",
            .. o.ImageFile is not null || o.VideoFile is not null ? ["Gemma4VisionModel"] : Array.Empty<string>(),
            .. o.AudioFile is not null ? ["Gemma4AudioModel"] : Array.Empty<string>(),
        ],
    };

    public static int Run(CompareCommand.Options o, CompareCommand.Checkpoint c)
    {
        var (dir, configPath, ids) = (c.Dir, c.ConfigPath, c.Ids);
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
        if (!o.Media.IsEmpty) return RunFiles(o, c, config);
        if (ComparePromptFits.Check(o, configPath, ComparePromptFits.Of(config), ids?.Length ?? o.PromptLength ?? Gemma4Scenario.PromptTokens,
                o.NewTokens(Gemma4Scenario.DefaultNewTokens)) is not { } predicted)
            return ExitCodes.Usage;

        return CompareCommand.Execute(o, dir, Gemma4Scenario.ForCheckpoint(dir, o.Tp, c.DType, ids, o.PromptLength ?? Gemma4Scenario.PromptTokens), predicted);
    }

    /// <summary>
    /// --image FILE / --audio FILE (and --text, --chat): the folder's towers checked against its config, then the prompt
    /// through the checkpoint's own processor, its ids, pixel values and features the prompt of both sides.
    /// </summary>
    private static int RunFiles(CompareCommand.Options o, CompareCommand.Checkpoint c, Gemma4TextConfig config)
    {
        var (dir, configPath) = (c.Dir, c.ConfigPath);
        try
        {
            // the towers the files need: their configs read (a bad field named) and their weights and embedders in the folder
            // (each tower's constructor checks every shape against its config, naming the tensor and the field)
            var needed = new List<string>();
            if (o.ImageFile is not null || o.VideoFile is not null)
            {
                Engine.Models.Gemma4.Vision.Gemma4VisionConfig.Load(configPath);
                needed.AddRange(["model.vision_tower.patch_embedder.input_proj.weight", "model.embed_vision.embedding_projection.weight"]);
            }
            if (o.AudioFile is not null)
            {
                Engine.Models.Gemma4.Audio.Gemma4AudioConfig.Load(configPath);
                needed.AddRange(["model.audio_tower.output_proj.weight", "model.embed_audio.embedding_projection.weight"]);
            }
            using var checkpoint = Engine.IO.Checkpoint.Open(dir);
            if (needed.FirstOrDefault(n => !checkpoint.Contains(n)) is { } missing)
                return CliSupport.UsageError($"compare: {dir} has no tensor '{missing}': {(missing.Contains("vision") ? o.VideoFile is not null ? "--video" : "--image" : "--audio")} needs the checkpoint's " +
                                             $"{(missing.Contains("vision") ? "vision" : "audio")} tower and embedder (Gemma4ForConditionalGeneration)");
        }
        catch (Exception e) when (e is Engine.Config.ConfigException or IOException or KeyNotFoundException or FormatException)
        {
            return CliSupport.UsageError($"compare: cannot load the towers of {configPath}: {e.Message}");
        }
        if (MediaFiles.Process(dir, o.Text, o.Chat, o.Media, o.Device) is not { } processed) return ExitCodes.Usage;
        var scenario = Gemma4MultimodalScenario.ForCheckpoint(dir, o.Tp, c.DType, processed, o.Media.Describe(), o.Media.Tag());
        var ids = scenario.PromptIds();
        if (ids.FirstOrDefault(id => id < 0 || id >= config.VocabSize, -1) is var outside && outside >= 0)
            return CliSupport.UsageError($"compare: the processor in {dir} gave token id {outside}, outside the vocabulary ({config.Path}vocab_size {config.VocabSize} in {configPath})");
        // the prompt (text, image and audio tokens) and the generated tokens fit the positions and the memory (issue 24)
        if (ComparePromptFits.Check(o, configPath, ComparePromptFits.Of(config), ids.Length, o.NewTokens(Gemma4MultimodalScenario.DefaultNewTokens)) is not { } predicted)
            return ExitCodes.Usage;
        return CompareCommand.Execute(o, dir, scenario, predicted);
    }
}
