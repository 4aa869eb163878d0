using Harness.Engine.Config;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Commands;

/// <summary>
/// `harness compare --model DIR` for Gemma3n checkpoints: model_type gemma3n (Gemma3nForConditionalGeneration; the
/// reference builds timm's vision tower when the checkpoint holds its weights, else a stub) and gemma3n_text (Gemma3nForCausalLM). A text prompt (--prompt ids, or
/// seeded ids below vocab_size_per_layer_input), any --tp; no --pp or --sp (the engine's Gemma3n runs TP only).
/// --audio FILE.wav and --image FILE go through the checkpoint's own Gemma3nProcessor (its audio feature extractor and image
/// processor; each placeholder expanded to audio_seq_length / image_seq_length tokens); the engine runs its OWN towers
/// (<see cref="Engine.Models.Gemma3n.Audio.Gemma3nAudioEncoder"/>, <see cref="Engine.Models.Gemma3n.Vision.MobileNetV5Encoder"/>)
/// on the processor's features and pixels, and the towers' modules, the embedders and the decoder are judged.
/// </summary>
internal static class Gemma3nCompare
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "gemma3n",
        Title = "Gemma3n",
        Contract = ModelContract.Of((weights, config, ctx, plan) => new Gemma3nModel(weights, Gemma3nConfig.Read(config), ctx, options: plan.Gemma3n)),
        ReferenceExtension = "gemma3n",
        TinyConfigs = () => new Dictionary<string, System.Text.Json.Nodes.JsonObject>
        {
            [TinyGemma3n.ModelName] = TinyGemma3n.Config(), [TinyGemma3nAudio.ModelName] = TinyGemma3nAudio.Config(),
            [TinyGemma3nVision.ModelName] = TinyGemma3nVision.Config(),
        },
        Scenarios = () => Gemma3nScenarios.All().Concat(Gemma3nAudioTowerScenario.All()).Concat(Gemma3nVisionTowerScenario.All()),
        ScenarioTypes = [typeof(Gemma3nScenario), typeof(Gemma3nAudioTowerScenario), typeof(Gemma3nVisionTowerScenario)],
        CompareLayouts = "--tp",
        Compare = Run,
        CheckpointScenario = (dir, dtype, ids) => Gemma3nScenario.ForCheckpoint(dir, 1, dtype, ids, ids.Length),
        MediaModels = o => [.. o.AudioFile is not null ? new[] { "Gemma3nAudioEncoder" } : [], .. o.ImageFile is not null ? new[] { "MobileNetV5Encoder" } : []],
    };

    public static int Run(CompareCommand.Options o, CompareCommand.Checkpoint c)
    {
        var (dir, dtype, ids, configPath) = (c.Dir, c.DType, c.Ids, c.ConfigPath);
        if (o.Pp != 1 || o.Sp)
            return CliSupport.UsageError("compare: Gemma3n runs with tensor parallelism only (--pp 1, no --sp)");
        Gemma3nScenario scenario;
        CompareMemory predicted;
        try
        {
            var config = Gemma3nConfig.Load(configPath);
            if (ids is not null && ids.FirstOrDefault(id => id >= config.Text.VocabSize, -1) is var bad && bad >= 0)
                return CliSupport.UsageError($"compare: prompt token id {bad} is outside the vocabulary (vocab_size {config.Text.VocabSize} in {configPath})");
            // the weights against the tensors the config declares, before any reference work (a mismatch is exit 2, one line)
            CheckpointValidator.Validate(dir, Gemma3nTensors.Expected(config));
            // the prompt and the generated tokens fit the positions and the memory, before any reference work (issue 24)
            if (ComparePromptFits.Check(o, configPath, ComparePromptFits.Of(config), ids?.Length ?? o.PromptLength ?? 6, o.NewTokens(Gemma3nScenario.DefaultNewTokens)) is not { } fits)
                return ExitCodes.Usage;
            predicted = fits;
            if (!o.Media.IsEmpty)
            {
                // --audio FILE.wav (and --text, --chat) through the checkpoint's own processor: its ids and features are the
                // prompt of both sides; the engine runs its own audio tower on the features (every tower module judged)
                string option = o.AudioFile is not null && o.ImageFile is not null ? "--image and --audio" : o.ImageFile is not null ? "--image" : "--audio";
                if (!config.IsMultimodal)
                    return CliSupport.UsageError($"compare: {option} needs Gemma3nForConditionalGeneration; {configPath} has no vision_config or audio_config");
                // the towers' configs read (a bad field named) and their weights in the folder, before any reference work
                var needed = new List<(string Tensor, string Option)>();
                if (o.AudioFile is not null)
                {
                    Engine.Models.Gemma3n.Audio.Gemma3nAudioConfig.Load(configPath);
                    needed.Add(("model.audio_tower.subsample_conv_projection.input_proj_linear.weight", "--audio needs the checkpoint's audio tower"));
                }
                if (o.ImageFile is not null)
                    needed.Add(($"{Engine.Models.Gemma3n.Vision.MobileNetV5Encoder.DefaultPrefix}.timm_model.conv_stem.conv.weight",
                        "--image needs the checkpoint's vision tower (timm's MobileNetV5)"));
                using (var checkpoint = Engine.IO.Checkpoint.Open(dir))
                {
                    if (needed.FirstOrDefault(n => !checkpoint.Contains(n.Tensor)) is { Tensor: not null } missing)
                        return CliSupport.UsageError($"compare: {dir} has no tensor '{missing.Tensor}': {missing.Option}");
                    if (o.ImageFile is not null)
                    {   // the tower's config (a field the port does not follow is named) and every tensor it reads, at its shape
                        var vision = Engine.Models.Gemma3n.Vision.MobileNetV5Config.Load(configPath);
                        foreach (var (name, shape) in Engine.Models.Gemma3n.Vision.MobileNetV5Encoder.ExpectedTensors(vision))
                            if (!checkpoint.Contains(name) || !checkpoint.GetInfo(name).Shape.SequenceEqual(shape))
                                return CliSupport.UsageError(checkpoint.Contains(name)
                                    ? $"compare: tensor '{name}' in {dir} is [{string.Join(", ", checkpoint.GetInfo(name).Shape)}], but vision_config in {configPath} makes it [{string.Join(", ", shape)}]"
                                    : $"compare: {dir} has no tensor '{name}', which vision_config in {configPath} ({vision.ChannelMultiplier:G} channel multiplier) makes the tower read");
                    }
                }
                if (MediaFiles.Process(dir, o.Text, o.Chat, o.Media, o.Device) is not { } processed) return ExitCodes.Usage;
                if (o.Device == "cuda")
                {
                    // Gemma3n's towers are TowerOps' host loops (their convolutions have no device kernel: a device input
                    // would be refused naming the op), so they run once on the host and hand their soft tokens to the ranks
                    var towers = new[] { o.ImageFile is not null ? "MobileNetV5Encoder" : null, o.AudioFile is not null ? "Gemma3nAudioEncoder" : null }.OfType<string>();
                    Console.WriteLine($"towers:      the engine's {string.Join(" and ", towers)} run on the host (their convolutions have no device kernel); " +
                                      "their soft tokens go to the ranks on cuda");
                }
                var processedIds = processed["input_ids"].ToInt64Array();
                if (processedIds.FirstOrDefault(id => id < 0 || id >= config.Text.VocabSize, -1) is var outside && outside >= 0)
                    return CliSupport.UsageError($"compare: the processor in {dir} gave token id {outside}, outside the vocabulary (vocab_size {config.Text.VocabSize} in {configPath})");
                if (ComparePromptFits.Check(o, configPath, ComparePromptFits.Of(config), processedIds.Length, o.NewTokens(Gemma3nScenario.DefaultNewTokens)) is not { } processedFits)
                    return ExitCodes.Usage;
                return CompareCommand.Execute(o, dir, Gemma3nScenario.ForCheckpoint(dir, o.Tp, dtype, processedIds, processedIds.Length)
                    .WithProcessed(processed, o.Media.Describe(), o.Media.Tag()), processedFits);
            }
            scenario = Gemma3nScenario.ForCheckpoint(dir, o.Tp, dtype, ids, o.PromptLength ?? 6);
        }
        catch (Exception e) when (e is ConfigException or IOException or ArgumentException or KeyNotFoundException or InvalidOperationException)
        {
            return CliSupport.UsageError($"compare: cannot load {configPath}: {e.Message}");
        }
        return CompareCommand.Execute(o, dir, scenario, predicted);
    }
}
