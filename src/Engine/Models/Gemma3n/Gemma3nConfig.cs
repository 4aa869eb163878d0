using System.Text.Json;
using Harness.Engine.Config;

namespace Harness.Engine.Models.Gemma3n;

/// <summary>
/// The settings of a HF Gemma3n checkpoint the engine reads: model_type "gemma3n" (Gemma3nForConditionalGeneration:
/// text_config, vision_config, audio_config and the multimodal token ids at the root) or "gemma3n_text"
/// (Gemma3nForCausalLM: the text settings at the root, no embedders). Every field is read through
/// <see cref="ConfigNode"/>, so a missing or mistyped one is one line naming the file and the JSON path
/// ("config.json: text_config.laurel_rank is missing"). HF key names are in the comments.
/// </summary>
public sealed record Gemma3nConfig
{
    /// <summary>model_type: "gemma3n" or "gemma3n_text".</summary>
    public required string ModelType { get; init; }
    public required Gemma3nTextSettings Text { get; init; }
    /// <summary>vision_config (null for gemma3n_text).</summary>
    public Gemma3nEmbedderSettings? Vision { get; init; }
    /// <summary>audio_config (null for gemma3n_text).</summary>
    public Gemma3nEmbedderSettings? Audio { get; init; }
    /// <summary>image_token_id: the placeholder the image soft tokens replace.</summary>
    public int? ImageTokenId { get; init; }
    /// <summary>audio_token_id: the placeholder the audio soft tokens replace.</summary>
    public int? AudioTokenId { get; init; }
    /// <summary>audio_soft_tokens_per_image: audio features are padded to this many tokens.</summary>
    public int? AudioSoftTokensPerImage { get; init; }
    /// <summary>vision_soft_tokens_per_image</summary>
    public int? VisionSoftTokensPerImage { get; init; }

    /// <summary>Where the text model's weights and modules live: "model.language_model" (gemma3n) or "model" (gemma3n_text).</summary>
    public string TextPrefix => ModelType == "gemma3n_text" ? "model" : "model.language_model";

    public bool IsMultimodal => Vision is not null;

    public static Gemma3nConfig Load(string path) => Read(HfConfig.Load(path));

    public static Gemma3nConfig Read(HfConfig hf)
    {
        var root = new ConfigNode(hf.Root, "", hf.SourceName);
        string type = root.RequiredString("model_type");
        if (type == "gemma3n_text")
            return new Gemma3nConfig { ModelType = type, Text = Gemma3nTextSettings.Read(root, hf.Text) };
        if (type != "gemma3n")
            throw root.Error("model_type", $"is '{type}', expected 'gemma3n' or 'gemma3n_text'");
        var text = root.Child("text_config") ?? throw root.Error("text_config", "is missing");
        var vision = root.Child("vision_config") ?? throw root.Error("vision_config", "is missing");
        var audio = root.Child("audio_config") ?? throw root.Error("audio_config", "is missing");
        var config = new Gemma3nConfig
        {
            ModelType = type,
            Text = Gemma3nTextSettings.Read(text, hf.Text),
            Vision = Gemma3nEmbedderSettings.Read(vision),
            Audio = Gemma3nEmbedderSettings.Read(audio),
            ImageTokenId = root.RequiredInt("image_token_id"),
            AudioTokenId = root.RequiredInt("audio_token_id"),
            AudioSoftTokensPerImage = root.RequiredInt("audio_soft_tokens_per_image"),
            VisionSoftTokensPerImage = root.RequiredInt("vision_soft_tokens_per_image"),
        };
        // Gemma3nModel.forward's vocabulary layout: text ids, then the vision range, then the audio range.
        if (config.Vision!.VocabOffset < config.Text.VocabSizePerLayerInput)
            throw vision.Error("vocab_offset", $"is {config.Vision.VocabOffset}, below text_config.vocab_size_per_layer_input {config.Text.VocabSizePerLayerInput}");
        if (config.Audio!.VocabOffset < config.Vision.VocabOffset)
            throw audio.Error("vocab_offset", $"is {config.Audio.VocabOffset}, below vision_config.vocab_offset {config.Vision.VocabOffset}");
        if (config.Audio.VocabOffset + config.Audio.VocabSize > config.Text.VocabSize)
            throw audio.Error("vocab_size", $"{config.Audio.VocabSize} from offset {config.Audio.VocabOffset} runs past text_config.vocab_size {config.Text.VocabSize}");
        return config;
    }
}

/// <summary>Gemma3nTextConfig's fields (text_config, or the root of a gemma3n_text file).</summary>
public sealed record Gemma3nTextSettings
{
    public required TextConfig Base { get; init; }
    /// <summary>hidden_size</summary>
    public int HiddenSize => Base.HiddenSize;
    /// <summary>num_hidden_layers</summary>
    public int NumLayers => Base.NumHiddenLayers;
    /// <summary>vocab_size</summary>
    public int VocabSize => Base.VocabSize;
    /// <summary>intermediate_size, one per layer (an int in the file applies to every layer).</summary>
    public required int[] IntermediateSizes { get; init; }
    /// <summary>vocab_size_per_layer_input</summary>
    public required int VocabSizePerLayerInput { get; init; }
    /// <summary>hidden_size_per_layer_input</summary>
    public required int HiddenSizePerLayerInput { get; init; }
    /// <summary>rms_norm_eps</summary>
    public required double RmsNormEps { get; init; }
    /// <summary>hidden_activation (the MLP and the per-layer-input gate)</summary>
    public required string HiddenActivation { get; init; }
    /// <summary>layer_types, one per layer: "sliding_attention" or "full_attention"</summary>
    public required string[] LayerTypes { get; init; }
    /// <summary>sliding_window: a sliding layer's query sees itself and sliding_window - 1 earlier tokens.</summary>
    public required int SlidingWindow { get; init; }
    /// <summary>num_kv_shared_layers: the last this many layers reuse an earlier layer's keys and values.</summary>
    public required int NumKvSharedLayers { get; init; }
    /// <summary>laurel_rank</summary>
    public required int LaurelRank { get; init; }
    /// <summary>altup_num_inputs</summary>
    public required int AltupNumInputs { get; init; }
    /// <summary>altup_active_idx</summary>
    public required int AltupActiveIdx { get; init; }
    /// <summary>altup_correct_scale</summary>
    public required bool AltupCorrectScale { get; init; }
    /// <summary>activation_sparsity_pattern, one per layer (0: dense)</summary>
    public required double[] ActivationSparsity { get; init; }
    /// <summary>final_logit_softcapping (null: none)</summary>
    public required double? FinalLogitSoftcapping { get; init; }

    public int FirstKvSharedLayer => NumLayers - NumKvSharedLayers;

    /// <summary>
    /// The layer whose keys and values layer i reads (itself when it is not shared): HF's kv_shared_layer_index, the
    /// last non-shared layer of the same type. Sharing applies when i >= first shared layer > 0.
    /// </summary>
    public int KvSourceLayer(int i) => FindKvSourceLayer(i)
        ?? throw new InvalidOperationException($"layer {i} ({LayerTypes[i]}) shares keys and values, but no earlier layer has its type");

    /// <summary><see cref="KvSourceLayer"/>, or null for a shared layer with no non-shared layer of its type.</summary>
    private int? FindKvSourceLayer(int i)
    {
        int first = FirstKvSharedLayer;
        if (!(i >= first && first > 0)) return i;
        for (int j = first - 1; j >= 0; j--)
            if (LayerTypes[j] == LayerTypes[i]) return j;
        return null;
    }

    internal static Gemma3nTextSettings Read(ConfigNode n, TextConfig baseConfig)
    {
        int layers = baseConfig.NumHiddenLayers;
        var inter = n.OptionalIntOrIntList("intermediate_size") ?? throw n.Error("intermediate_size", "is missing");
        if (inter.Length == 1) inter = Enumerable.Repeat(inter[0], layers).ToArray();
        if (inter.Length != layers) throw n.Error("intermediate_size", $"has {inter.Length} entries for {layers} layers");
        var types = n.OptionalStringList("layer_types") ?? throw n.Error("layer_types", "is missing");
        if (types.Length != layers) throw n.Error("layer_types", $"has {types.Length} entries for {layers} layers");
        for (int i = 0; i < types.Length; i++)
            if (types[i] is not ("sliding_attention" or "full_attention"))
                throw n.Error($"layer_types[{i}]", $"is '{types[i]}', expected 'sliding_attention' or 'full_attention'");
        var sparsity = n.OptionalDoubleList("activation_sparsity_pattern") ?? throw n.Error("activation_sparsity_pattern", "is missing");
        if (sparsity.Length != layers) throw n.Error("activation_sparsity_pattern", $"has {sparsity.Length} entries for {layers} layers");
        for (int i = 0; i < sparsity.Length; i++)
            if (sparsity[i] is < 0 or >= 1) throw n.Error($"activation_sparsity_pattern[{i}]", $"is {sparsity[i]}, expected a value in [0, 1)");
        double? softcap = n.Has("final_logit_softcapping") ? n.RequiredDouble("final_logit_softcapping")
            : n.Element.TryGetProperty("final_logit_softcapping", out _) ? null
            : throw n.Error("final_logit_softcapping", "is missing");
        int shared = n.RequiredInt("num_kv_shared_layers");
        if (shared < 0 || shared >= layers) throw n.Error("num_kv_shared_layers", $"is {shared}, expected 0 to {layers - 1}");
        int altup = n.RequiredInt("altup_num_inputs");
        if (altup < 2) throw n.Error("altup_num_inputs", $"is {altup}, expected at least 2");
        int active = n.RequiredInt("altup_active_idx");
        if (active < 0 || active >= altup) throw n.Error("altup_active_idx", $"is {active}, expected 0 to {altup - 1}");
        foreach (var type in types.Distinct())
        {
            var rope = baseConfig.RopeByLayerType is null ? throw n.Error("rope_parameters", "needs an entry per layer type (sliding_attention, full_attention)")
                : baseConfig.RopeByLayerType.TryGetValue(type, out var r) ? r : throw n.Error($"rope_parameters.{type}", "is missing");
            if (rope.RopeType != "default")
                throw new ConfigException(n.SourceName, rope.JsonPath, $"has rope_type '{rope.RopeType}'; the engine's Gemma3n supports 'default'");
        }
        var settings = new Gemma3nTextSettings
        {
            Base = baseConfig,
            IntermediateSizes = inter,
            VocabSizePerLayerInput = n.RequiredInt("vocab_size_per_layer_input"),
            HiddenSizePerLayerInput = n.RequiredInt("hidden_size_per_layer_input"),
            RmsNormEps = n.RequiredDouble("rms_norm_eps"),
            HiddenActivation = n.RequiredString("hidden_activation"),
            LayerTypes = types,
            SlidingWindow = n.RequiredInt("sliding_window"),
            NumKvSharedLayers = shared,
            LaurelRank = n.RequiredInt("laurel_rank"),
            AltupNumInputs = altup,
            AltupActiveIdx = active,
            AltupCorrectScale = n.RequiredBool("altup_correct_scale"),
            ActivationSparsity = sparsity,
            FinalLogitSoftcapping = softcap,
        };
        if (settings.VocabSizePerLayerInput > baseConfig.VocabSize)
            throw n.Error("vocab_size_per_layer_input", $"is {settings.VocabSizePerLayerInput}, above vocab_size {baseConfig.VocabSize}");
        // every shared layer needs a source: HF's kv_shared_layer_index, the last non-shared layer of its type
        for (int i = 0; i < layers; i++)
            if (settings.FindKvSourceLayer(i) is null)
                throw n.Error("num_kv_shared_layers", $"is {settings.NumKvSharedLayers}: layer {i} ({settings.LayerTypes[i]}) " +
                    $"shares keys and values, but none of the {settings.FirstKvSharedLayer} non-shared layers is {settings.LayerTypes[i]}");
        return settings;
    }
}

/// <summary>Gemma3nVisionConfig / Gemma3nAudioConfig as the multimodal embedder reads them.</summary>
public sealed record Gemma3nEmbedderSettings
{
    /// <summary>The JSON path ("vision_config" / "audio_config") for messages.</summary>
    public required string JsonPath { get; init; }
    /// <summary>hidden_size: the tower's output width, the embedder's input width.</summary>
    public required int HiddenSize { get; init; }
    /// <summary>vocab_size: hard tokens of this modality.</summary>
    public required int VocabSize { get; init; }
    /// <summary>vocab_offset: the first hard token id.</summary>
    public required int VocabOffset { get; init; }
    /// <summary>rms_norm_eps (the embedder's three norms)</summary>
    public required double RmsNormEps { get; init; }

    internal static Gemma3nEmbedderSettings Read(ConfigNode n) => new()
    {
        JsonPath = n.Path,
        HiddenSize = n.RequiredInt("hidden_size"),
        VocabSize = n.RequiredInt("vocab_size"),
        VocabOffset = n.RequiredInt("vocab_offset"),
        RmsNormEps = n.RequiredDouble("rms_norm_eps"),
    };
}

/// <summary>
/// Engine-side choices that are not in config.json. <see cref="EmbedderInputIsParallel"/> re-creates vLLM's Gemma-3n
/// TP bug: the multimodal embedder's projection built as a RowParallelLinear with input_is_parallel=True although it
/// is fed the full-width normed vector (correct: False).
/// </summary>
public sealed record Gemma3nOptions
{
    public static readonly Gemma3nOptions Default = new();

    /// <summary>Builds embed_vision/embed_audio.embedding_projection with input_is_parallel=True (the bug).</summary>
    public bool EmbedderInputIsParallel { get; init; }

    /// <summary>
    /// Takes the sparse MLP's gaussian top-k mean and std over this rank's gate shard (an activation that only sees the
    /// local gate_up output, as vLLM's GeluAndMulSparse under TP) instead of the whole intermediate row (the bug).
    /// </summary>
    public bool SparseTopKRankLocal { get; init; }

    /// <summary>The longest sequence the KV caches hold.</summary>
    public int MaxPositions { get; init; } = 256;

    /// <summary>
    /// The audio tower's attention leaves out the Transformer-XL relative shift of term_bd (the bug): each query reads
    /// the relative position of the key column instead of column minus its own offset in the block.
    /// </summary>
    public bool AudioRelShiftSkipped { get; init; }

    /// <summary>
    /// The audio tower's subsampling norm takes each frame's own mean and variance (a plain group norm, the bug) instead
    /// of Gemma3nAudioCumulativeGroupNorm's statistics cumulated over every frame so far.
    /// </summary>
    public bool AudioSscpNormPlainMean { get; init; }

    /// <summary>
    /// The vision tower's convs padded as PyTorch pads (symmetric get_padding, (s - 1 + k - 1) / 2 on each side) where timm's
    /// padding='same' pads as TensorFlow's SAME (Conv2dSame: asymmetric, the extra row and column after) at stride 2 (the bug).
    /// </summary>
    public bool VisionSamePadSymmetric { get; init; }

    /// <summary>The vision tower's UniversalInvertedResidual blocks without their residual add (the bug): x, not x + shortcut.</summary>
    public bool VisionUirResidualDropped { get; init; }
}
