using System.Text.Json;
using Harness.Engine.Config;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Llama;
using Harness.Engine.Tensors;

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
    public sealed record FolderModel(Func<HfConfig, ModelTensors> ExpectedTensors, Func<HfConfig, int, int, string?> LayoutProblem)
    {
        /// <summary>The classes config.json's architectures[0] may name (the reference loads that class: "Trainer" is no model).</summary>
        public IReadOnlyList<string> Architectures { get; init; } = [];
    }

    /// <summary>model_type values the engine can load from a folder. A new model adds its line here.</summary>
    public static readonly IReadOnlyDictionary<string, FolderModel> Models = new Dictionary<string, FolderModel>
    {
        ["llama"] = new(LlamaForCausalLM.ExpectedTensors, (c, tp, pp) => LlamaTensors.LayoutProblem(c.Text, tp, pp)) { Architectures = ["LlamaForCausalLM"] },
    };

    public static IReadOnlyList<string> Supported => Models.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>
    /// The folder, its config.json and some weights are there; returns config.json's path. The folder may be an HF hub
    /// snapshot (files that are relative links into ../../blobs) or any folder of links: every file is taken through its
    /// links, and config.json, the index and every *.safetensors must be regular files there (a FIFO, a device, a loop of
    /// links or a dangling link is named as such, before anything blocks on it); no other file of the folder may be a
    /// FIFO, a device, a socket or a loop of links. Messages name the user's path.
    /// </summary>
    public static string CheckFiles(string directory)
    {
        var dir = Path.GetFullPath(directory);
        var kind = InputFiles.KindOf(dir);
        if (kind == FileKind.Missing) throw new InputException(dir, "no such model folder");
        if (kind != FileKind.Directory) throw new InputException(dir, $"is {InputFiles.Describe(kind)}, not a model folder");
        var configPath = Path.Combine(dir, "config.json");
        if (!File.Exists(configPath) && new FileInfo(configPath).LinkTarget is null && !Directory.Exists(configPath))
            throw new InputException(configPath, "no config.json in the model folder");
        InputFiles.RequireRegular(configPath, "config.json");
        var index = Path.Combine(dir, Checkpoint.IndexFileName);
        bool hasIndex = InputFiles.KindOf(index) != FileKind.Missing || new FileInfo(index).LinkTarget is not null;
        if (hasIndex) InputFiles.RequireRegular(index, Checkpoint.IndexFileName);
        var weights = Directory.GetFiles(dir, "*.safetensors");
        foreach (var w in weights) InputFiles.RequireRegular(w, "weights file");
        if (weights.Length == 0 && !hasIndex)
            throw new InputException(dir, "no weights (*.safetensors) in the model folder" +
                                          (Directory.GetFiles(dir, "*.bin").Length > 0 ? " (only PyTorch .bin files: convert them to safetensors)" : ""));
        // the files HF reads beside them (the tokenizer, generation_config.json, the processor's configs, a chat template):
        // a FIFO there blocked the worker forever, a link to /dev/zero filled its memory (issue 24); a dangling link to a
        // file nothing reads is left alone
        foreach (var entry in Directory.EnumerateFileSystemEntries(dir).Order(StringComparer.Ordinal))
            if (InputFiles.KindOf(entry) is FileKind.Fifo or FileKind.CharacterDevice or FileKind.BlockDevice or FileKind.Socket or FileKind.SymlinkLoop)
                InputFiles.RequireRegular(entry, "file");
        return configPath;
    }

    /// <summary>
    /// The sizes of a decoder that bound a request (issue 24), whatever the family's config type: the positions it takes
    /// and what its reference holds per position. Gemma4's full-attention layers use <see cref="GlobalHeadDim"/>.
    /// </summary>
    public sealed record PromptShape(int? MaxPositions, int Heads, int KvHeads, int HeadDim, int Layers, int Hidden, int Intermediate, int Vocab)
    {
        /// <summary>The widest head of any layer (Gemma4's global_head_dim; otherwise head_dim).</summary>
        public int GlobalHeadDim { get; init; } = HeadDim;

        /// <summary>The field that bounds the positions, as config.json spells it (text_config.max_position_embeddings in a nested config).</summary>
        public string MaxPositionsField { get; init; } = "max_position_embeddings";

        public static PromptShape Of(TextConfig text)
        {
            int? maxPositions = null;
            ConfigReads.Validate(() => maxPositions = text.MaxPositionEmbeddings);   // a check, not the engine reading the field
            return new(maxPositions, text.NumAttentionHeads, text.NumKeyValueHeads, text.HeadDim, text.NumHiddenLayers, text.HiddenSize,
                text.IntermediateSize, text.VocabSize);
        }
    }

    /// <summary>
    /// The request must fit the model and the machine before any reference work (issue 24: a 600-token prompt ran the
    /// whole reference and then diverged; 1,000,000 tokens asked torch for a terabyte): prompt plus generated tokens within
    /// max_position_embeddings, and compare's one memory prediction (<see cref="Commands.CompareMemory"/>: the weights from
    /// the folder's headers on every side, and this request's caches, attention scores, logits and records) within
    /// <paramref name="availableBytes"/> (null: what the host has available). Returns the prediction it checked.
    /// </summary>
    public static Commands.CompareMemory CheckPromptFits(string configPath, TextConfig text, int promptTokens, int newTokens, DType dtype, bool oracle,
        long? availableBytes = null, bool steps = true, bool oracleWhole = false) =>
        CheckPromptFits(configPath, PromptShape.Of(text), promptTokens, newTokens, dtype, oracle, availableBytes, steps, oracleWhole);

    /// <inheritdoc cref="CheckPromptFits(string, TextConfig, int, int, DType, bool, long?, bool, bool)"/>
    public static Commands.CompareMemory CheckPromptFits(string configPath, PromptShape shape, int promptTokens, int newTokens, DType dtype, bool oracle,
        long? availableBytes = null, bool steps = true, bool oracleWhole = false)
    {
        if (shape.MaxPositions is int max && (long)promptTokens + newTokens > max)
            throw new InputException(configPath, $"a prompt of {promptTokens} tokens plus {newTokens} generated is longer than {shape.MaxPositionsField} ({max})");
        var memory = Commands.CompareMemory.Of(Path.GetDirectoryName(Path.GetFullPath(configPath))!, dtype, oracle, oracleWhole, gpu: false,
            promptTokens, newTokens, steps, shape);
        if ((availableBytes ?? Commands.CompareMemory.HostAvailable()) is long mem && memory.Shortfall(mem, "host") is { } why)
            throw new InputException(configPath, $"a prompt of {promptTokens} tokens and {newTokens} generated on this model ({memory.Weights}) {why}");
        return memory;
    }

    public static HfConfig Check(string directory, int tp = 1, int pp = 1, IReadOnlyList<long>? promptIds = null)
    {
        var dir = Path.GetFullPath(directory);
        var configPath = CheckFiles(dir);

        // model_type first, so an unsupported model is named as such rather than by the first field our reader misses.
        string? modelType;
        try
        {
            using var doc = JsonDocument.Parse(InputFiles.ReadCapped(configPath, InputFiles.ConfigMaxBytes, "config file"), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
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
        if (model.Architectures.Count > 0 && config.Architectures.Count > 0 && !model.Architectures.Contains(config.Architectures[0]))
            throw new ConfigException(configPath, "architectures.0",
                $"is '{config.Architectures[0]}': not a {modelType} model class the reference can load (expected {string.Join(" or ", model.Architectures)})");
        var expected = model.ExpectedTensors(config);
        if (promptIds is not null && promptIds.FirstOrDefault(id => id >= config.Text.VocabSize, -1) is var bad && bad >= 0)
            throw new InputException(configPath, $"prompt token id {bad} is outside the vocabulary (vocab_size {config.Text.VocabSize})");
        if (model.LayoutProblem(config, tp, pp) is { } layout) throw new InputException(configPath, layout);
        CheckpointValidator.Validate(dir, expected);
        return config;
    }
}
