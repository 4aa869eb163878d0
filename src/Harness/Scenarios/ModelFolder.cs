using System.Text.Json;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Llama;

namespace Harness.Scenarios;

/// <summary>
/// A user's HF checkpoint folder (`harness compare --model DIR`), checked as the engine will load it and before any
/// reference work: the folder, config.json (a supported model_type, every field the model reads, values it can run),
/// the layout against the config, and the weights against the tensors the model declares (<see cref="ICheckpointModel"/>).
/// Every problem is an exception marked <see cref="IInputError"/> whose one-line message names the file and the field
/// or tensor.
/// </summary>
public static class ModelFolder
{
    /// <summary>
    /// What a model_type needs to be loaded from a folder: its tensor declaration (<see cref="ICheckpointModel.ExpectedTensors"/>)
    /// and why a TP x PP layout cannot split it (null: it can).
    /// </summary>
    public sealed record FolderModel(Func<HfConfig, ModelTensors> ExpectedTensors, Func<HfConfig, int, int, string?> LayoutProblem);

    /// <summary>model_type values the engine can load from a folder. A new model adds its line here.</summary>
    public static readonly IReadOnlyDictionary<string, FolderModel> Models = new Dictionary<string, FolderModel>
    {
        ["llama"] = new(LlamaForCausalLM.ExpectedTensors, (c, tp, pp) => LlamaTensors.LayoutProblem(c.Text, tp, pp)),
    };

    public static IReadOnlyList<string> Supported => Models.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>Checks the folder; returns its config. <paramref name="promptIds"/>, when given, must lie inside vocab_size.</summary>
    /// <summary>The folder, its config.json and some weights are there; returns config.json's path.</summary>
    public static string CheckFiles(string directory)
    {
        var dir = Path.GetFullPath(directory);
        if (!Directory.Exists(dir)) throw new InputException(dir, "no such model folder");
        var configPath = Path.Combine(dir, "config.json");
        if (!File.Exists(configPath)) throw new InputException(configPath, "no config.json in the model folder");
        if (Directory.GetFiles(dir, "*.safetensors").Length == 0 && !File.Exists(Path.Combine(dir, Checkpoint.IndexFileName)))
            throw new InputException(dir, "no weights (*.safetensors) in the model folder" +
                                          (Directory.GetFiles(dir, "*.bin").Length > 0 ? " (only PyTorch .bin files: convert them to safetensors)" : ""));
        return configPath;
    }

    public static HfConfig Check(string directory, int tp = 1, int pp = 1, IReadOnlyList<long>? promptIds = null)
    {
        var dir = Path.GetFullPath(directory);
        var configPath = CheckFiles(dir);

        // model_type first, so an unsupported model is named as such rather than by the first field our reader misses.
        string? modelType;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            var root = doc.RootElement;
            modelType = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("model_type", out var mt) && mt.ValueKind == JsonValueKind.String ? mt.GetString() : null;
        }
        catch (JsonException e)
        {
            throw new ConfigException(configPath, "", $"is not valid JSON: {e.Message.Split('\n')[0]}", e);
        }
        if (modelType is null) throw new ConfigException(configPath, "model_type", "is missing or not a string");
        if (!Models.TryGetValue(modelType, out var model))
            throw new ConfigException(configPath, "model_type", $"is '{modelType}': not supported yet (supported: {string.Join(", ", Supported)})");

        var config = HfConfig.Load(configPath);
        var expected = model.ExpectedTensors(config);
        if (promptIds is not null && promptIds.FirstOrDefault(id => id >= config.Text.VocabSize, -1) is var bad && bad >= 0)
            throw new InputException(configPath, $"prompt token id {bad} is outside the vocabulary (vocab_size {config.Text.VocabSize})");
        if (model.LayoutProblem(config, tp, pp) is { } layout) throw new InputException(configPath, layout);
        CheckpointValidator.Validate(dir, expected);
        return config;
    }
}
