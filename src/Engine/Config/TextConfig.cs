using System.Text.Json;

namespace Harness.Engine.Config;

/// <summary>
/// The language-model part of a HF config: "text_config" when the file has one, else the root. HF key names are in
/// the comments. Required: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size.
/// </summary>
public sealed record TextConfig
{
    /// <summary>Where this was read from: "text_config" or "" (root).</summary>
    public required string JsonPath { get; init; }
    /// <summary>The config file (or the name given to <see cref="HfConfig.Parse"/>), for messages; "" when built in code.</summary>
    public string SourceName { get; init; } = "";

    /// <summary>A <see cref="ConfigException"/> for a field of this section ("config.json: text_config.hidden_size must be ...").</summary>
    public ConfigException Error(string key, string problem) =>
        new(SourceName.Length == 0 ? "config" : SourceName, JsonPath.Length == 0 ? key : $"{JsonPath}.{key}", problem);
    /// <summary>model_type of the text part (e.g. "gemma4_text"); null when absent.</summary>
    public string? ModelType { get; init; }
    /// <summary>hidden_size</summary>
    public required int HiddenSize { get; init; }
    /// <summary>intermediate_size; when HF wrote a per-layer list (gemma3n), the first entry (see <see cref="IntermediateSizes"/>).</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>intermediate_size as a per-layer list, when HF wrote one; else null.</summary>
    public int[]? IntermediateSizes { get; init; }
    /// <summary>num_hidden_layers</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary>num_attention_heads</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary>num_key_value_heads (defaults to num_attention_heads)</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary>head_dim (defaults to hidden_size / num_attention_heads)</summary>
    public required int HeadDim { get; init; }
    /// <summary>vocab_size</summary>
    public required int VocabSize { get; init; }
    /// <summary>max_position_embeddings (read when first used: a field is "read" only by code that needs it, see ConfigReads)</summary>
    public int? MaxPositionEmbeddings { get => _maxPositions.Value; init => _maxPositions = new(value); }
    private Deferred<int?> _maxPositions = new(default(int?));
    /// <summary>rms_norm_eps, or layer_norm_eps (layer_norm_epsilon) for LayerNorm models</summary>
    public double? NormEps { get; init; }
    /// <summary>hidden_act or hidden_activation, as HF wrote it ("silu", "gelu_pytorch_tanh", ...)</summary>
    public string? HiddenAct { get; init; }
    /// <summary>tie_word_embeddings: this section's value, else the root's, else true (PretrainedConfig's default)</summary>
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>attention_bias (default false)</summary>
    public bool AttentionBias { get; init; }
    /// <summary>mlp_bias (default false)</summary>
    public bool MlpBias { get; init; }
    // The fields below are read when first used, so the config-field mutation check (ConfigReads) sees a field as read
    // only by a model that needs it.
    /// <summary>dtype, or torch_dtype in older files, as written ("bfloat16"); this section's, else the root's</summary>
    public string? DType { get => _dtype.Value; init => _dtype = new(value); }
    /// <summary>bos_token_id</summary>
    public int? BosTokenId { get => _bos.Value; init => _bos = new(value); }
    /// <summary>eos_token_id: an int or a list in the file; always a list here (empty when absent)</summary>
    public int[] EosTokenIds { get => _eos.Value; init => _eos = new(value); }
    /// <summary>pad_token_id</summary>
    public int? PadTokenId { get => _pad.Value; init => _pad = new(value); }
    /// <summary>sliding_window (null: none)</summary>
    public int? SlidingWindow { get => _slidingWindow.Value; init => _slidingWindow = new(value); }
    /// <summary>layer_types ("full_attention", "sliding_attention", ...), one per layer, when present</summary>
    public string[]? LayerTypes { get => _layerTypes.Value; init => _layerTypes = new(value); }
    private Deferred<string?> _dtype = new(default(string));
    private Deferred<int?> _bos = new(default(int?)), _pad = new(default(int?)), _slidingWindow = new(default(int?));
    private Deferred<int[]> _eos = new([]);
    private Deferred<string[]?> _layerTypes = new(default(string[]));

    /// <summary>A value given at construction, or read from the config on first use (then kept).</summary>
    private sealed class Deferred<T>
    {
        private Func<T>? _read;
        private T _value;
        public Deferred(T value) => _value = value;
        public Deferred(Func<T> read) { _read = read; _value = default!; }
        public T Value
        {
            get
            {
                if (_read is { } read) { _value = read(); _read = null; }
                return _value;
            }
        }
    }
    /// <summary>
    /// rope_parameters (or legacy rope_theta + rope_scaling). With a per-layer-type map, this is the
    /// "full_attention" entry (the first entry when there is none).
    /// </summary>
    public required RopeParameters Rope { get; init; }
    /// <summary>rope_parameters per layer type ({"full_attention": ..., "sliding_attention": ...}) when the file has such a map.</summary>
    public IReadOnlyDictionary<string, RopeParameters>? RopeByLayerType { get; init; }

    /// <summary>The RoPE settings of one layer type (the shared ones when there is no per-type map).</summary>
    public RopeParameters RopeFor(string layerType)
    {
        if (RopeByLayerType is null) return Rope;
        return RopeByLayerType.TryGetValue(layerType, out var r) ? r
            : throw new KeyNotFoundException($"no rope_parameters for layer type '{layerType}' (have: {string.Join(", ", RopeByLayerType.Keys)})");
    }

    internal static TextConfig Read(ConfigNode n, ConfigNode root)
    {
        bool nested = n.Path.Length > 0;
        int hidden = Positive(n, "hidden_size", n.RequiredInt("hidden_size"));
        int heads = Positive(n, "num_attention_heads", n.RequiredInt("num_attention_heads"));
        var inter = n.OptionalIntOrIntList("intermediate_size") ?? throw n.Error("intermediate_size", "is missing");
        if (inter.Length == 0) throw n.Error("intermediate_size", "is an empty list");
        for (int i = 0; i < inter.Length; i++) Positive(n, inter.Length == 1 ? "intermediate_size" : $"intermediate_size[{i}]", inter[i]);
        bool interIsList = n.Get("intermediate_size")!.Value.ValueKind == JsonValueKind.Array;
        int? headDim = n.OptionalInt("head_dim");
        if (headDim is int hd) Positive(n, "head_dim", hd);
        if (headDim is null && hidden % heads != 0)
            throw n.Error("head_dim", $"is missing and hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        int kvHeads = Positive(n, "num_key_value_heads", n.OptionalInt("num_key_value_heads") ?? heads);
        if (heads % kvHeads != 0)
            throw n.Error("num_key_value_heads", $"is {kvHeads}, which does not divide num_attention_heads {heads}");
        int layers = Positive(n, "num_hidden_layers", n.RequiredInt("num_hidden_layers"));
        int vocab = Positive(n, "vocab_size", n.RequiredInt("vocab_size"));

        string? epsKey = n.FirstPresent("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon");
        string? actKey = n.FirstPresent("hidden_act", "hidden_activation");

        var (rope, byType) = ReadRope(n);

        // Read when first used (so only a model that needs one counts as reading it), but checked now: a malformed value
        // fails at load, naming the field.
        Func<int?> maxPositions = () => n.OptionalInt("max_position_embeddings");
        Func<string?> dtype = () => (n.FirstPresent("dtype", "torch_dtype") is { } k ? n.OptionalString(k) : null)
            ?? (nested && root.FirstPresent("dtype", "torch_dtype") is { } rk ? root.OptionalString(rk) : null);
        Func<int?> bos = () => n.OptionalInt("bos_token_id") ?? (nested ? root.OptionalInt("bos_token_id") : null);
        Func<int[]> eos = () => n.OptionalIntOrIntList("eos_token_id") ?? (nested ? root.OptionalIntOrIntList("eos_token_id") : null) ?? [];
        Func<int?> pad = () => n.OptionalInt("pad_token_id") ?? (nested ? root.OptionalInt("pad_token_id") : null);
        Func<int?> slidingWindow = () => n.OptionalInt("sliding_window");
        Func<string[]?> layerTypes = () => n.OptionalStringList("layer_types");
        ConfigReads.Validate(() => { maxPositions(); dtype(); bos(); eos(); pad(); slidingWindow(); layerTypes(); });

        return new TextConfig
        {
            JsonPath = n.Path,
            SourceName = n.SourceName,
            ModelType = nested ? n.OptionalString("model_type") : root.OptionalString("model_type"),
            HiddenSize = hidden,
            IntermediateSize = inter[0],
            IntermediateSizes = interIsList ? inter : null,
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim ?? hidden / heads,
            VocabSize = vocab,
            _maxPositions = new(maxPositions),
            NormEps = epsKey is null ? null : n.OptionalDouble(epsKey),
            HiddenAct = actKey is null ? null : n.OptionalString(actKey),
            TieWordEmbeddings = n.OptionalBool("tie_word_embeddings") ?? (nested ? root.OptionalBool("tie_word_embeddings") : null) ?? true,
            AttentionBias = n.OptionalBool("attention_bias") ?? false,
            MlpBias = n.OptionalBool("mlp_bias") ?? false,
            _dtype = new(dtype),
            _bos = new(bos),
            _eos = new(eos),
            _pad = new(pad),
            _slidingWindow = new(slidingWindow),
            _layerTypes = new(layerTypes),
            Rope = rope,
            RopeByLayerType = byType,
        };
    }

    /// <summary>A size or count must be at least 1: 0 heads or a negative size is an error naming the field.</summary>
    private static int Positive(ConfigNode n, string key, int value) =>
        value >= 1 ? value : throw n.Error(key, $"must be at least 1, but is {value}");

    /// <summary>
    /// rope_parameters (5.x): one dict, or a dict per layer type (every value an object). Otherwise the legacy keys;
    /// legacy gemma3-style "rope_local_base_freq" becomes a per-layer-type map (sliding layers use that base).
    /// </summary>
    private static (RopeParameters, IReadOnlyDictionary<string, RopeParameters>?) ReadRope(ConfigNode n)
    {
        double? partial = n.OptionalDouble("partial_rotary_factor");
        double? rootTheta = n.OptionalDouble("rope_theta");
        if (n.Child("rope_parameters") is { } rp)
        {
            bool perType = rp.Element.EnumerateObject().Any() &&
                           rp.Element.EnumerateObject().All(p => p.Value.ValueKind is JsonValueKind.Object or JsonValueKind.Null);
            if (!perType) return (RopeParameters.FromNew(rp, partial, rootTheta), null);
            var map = new Dictionary<string, RopeParameters>(StringComparer.Ordinal);
            foreach (var p in rp.Element.EnumerateObject())
                if (rp.Child(p.Name) is { } entry) map[p.Name] = RopeParameters.FromNew(entry, partial, rootTheta);
            var main = map.TryGetValue("full_attention", out var full) ? full : map.Values.First();
            return (main, map);
        }
        var legacy = RopeParameters.FromLegacy(n);
        if (n.OptionalDouble("rope_local_base_freq") is double local)
        {
            var sliding = new RopeParameters { RopeType = "default", RopeTheta = local, JsonPath = n.PathOf("rope_local_base_freq") };
            return (legacy, new Dictionary<string, RopeParameters> { ["full_attention"] = legacy, ["sliding_attention"] = sliding });
        }
        return (legacy, null);
    }
}
