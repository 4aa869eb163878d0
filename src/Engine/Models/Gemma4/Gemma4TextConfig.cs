using Harness.Engine.Config;

namespace Harness.Engine.Models.Gemma4;

/// <summary>One layer type's RoPE (rope_parameters[layer_type]): "default" or "proportional".</summary>
public sealed record Gemma4Rope(string RopeType, double Theta, double PartialRotaryFactor, double Factor);

/// <summary>
/// Gemma4TextConfig as the engine reads it, from a gemma4_text config.json (Gemma4ForCausalLM) or the text_config of a
/// gemma4 one (Gemma4ForConditionalGeneration). Absent fields take HF 5.12.1's defaults; errors name the file and path.
/// </summary>
public sealed record Gemma4TextConfig
{
    public required string Source { get; init; }
    /// <summary>"text_config." or "" : where the fields were read.</summary>
    public required string Path { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int GlobalHeadDim { get; init; }
    public required int? NumGlobalKeyValueHeads { get; init; }
    public required bool AttentionKEqV { get; init; }
    public required bool AttentionBias { get; init; }
    public required string HiddenActivation { get; init; }
    public required double RmsNormEps { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public required int SlidingWindow { get; init; }
    public required string[] LayerTypes { get; init; }
    public required IReadOnlyDictionary<string, Gemma4Rope> Rope { get; init; }
    public required double? FinalLogitSoftcapping { get; init; }
    public required string? UseBidirectionalAttention { get; init; }
    public required int VocabSizePerLayerInput { get; init; }
    public required int HiddenSizePerLayerInput { get; init; }
    public required int NumKvSharedLayers { get; init; }
    public required bool UseDoubleWideMlp { get; init; }
    public required bool EnableMoeBlock { get; init; }
    public required int NumExperts { get; init; }
    public required int TopKExperts { get; init; }
    public required int MoeIntermediateSize { get; init; }
    public required int PadTokenId { get; init; }
    /// <summary>max_position_embeddings, the bound on a sequence's positions (read under ConfigReads.Validate: a check on the
    /// request, not something an output depends on); null when absent.</summary>
    public int? MaxPositionEmbeddings { get; init; }
    /// <summary>image_token_id, video_token_id, audio_token_id of a gemma4 (conditional generation) config: placeholders that
    /// Gemma4Model.forward replaces by pad_token_id before the embeddings (empty for gemma4_text).</summary>
    public int[] MultimodalTokenIds { get; init; } = [];
    /// <summary>image_token_id, video_token_id: the tokens use_bidirectional_attention="vision" groups into blocks.</summary>
    public int[] VisionTokenIds { get; init; } = [];

    /// <summary>
    /// A gemma4 config's image_token_id, video_token_id or audio_token_id: absent, Gemma4Config's default (258880, 258884,
    /// 258881 in transformers 5.12.1 and 5.17); a JSON null, none (HF's None: no placeholder of that modality).
    /// </summary>
    public static int? TokenId(HfConfig hf, string key) =>
        hf.GetIntOrNull(key) ?? (hf.IsNull(key) ? null : DefaultTokenIds.TryGetValue(key, out int id) ? id : null);

    private static readonly Dictionary<string, int> DefaultTokenIds = new()
    {
        ["image_token_id"] = 258_880, ["video_token_id"] = 258_884, ["audio_token_id"] = 258_881,
    };

    public bool IsSliding(int layer) => LayerTypes[layer] == "sliding_attention";

    /// <summary>First KV-shared layer: num_hidden_layers - num_kv_shared_layers.</summary>
    public int FirstKvSharedLayer => NumHiddenLayers - NumKvSharedLayers;

    /// <summary>Attention's rule: layer_idx >= first_shared >= 0.</summary>
    public bool IsKvSharedLayer(int layer) => layer >= FirstKvSharedLayer && FirstKvSharedLayer >= 0 && NumKvSharedLayers > 0;

    /// <summary>The last non-shared layer of the same type, whose K/V a shared layer reuses.</summary>
    public int KvSourceLayer(int layer)
    {
        for (int i = FirstKvSharedLayer - 1; i >= 0; i--)
            if (LayerTypes[i] == LayerTypes[layer]) return i;
        throw new ConfigException(Source, Path + "layer_types",
            $"layer {layer} ({LayerTypes[layer]}) shares K/V but no earlier non-shared layer has that type");
    }

    /// <summary>The MLP's rule: double width when use_double_wide_mlp and layer_idx >= first_shared > 0.</summary>
    public int MlpIntermediate(int layer) =>
        IntermediateSize * (UseDoubleWideMlp && layer >= FirstKvSharedLayer && FirstKvSharedLayer > 0 ? 2 : 1);

    public int LayerHeadDim(int layer) => IsSliding(layer) ? HeadDim : GlobalHeadDim;

    /// <summary>k=v layers (attention_k_eq_v, full layers only) use num_global_key_value_heads and have no v_proj.</summary>
    public bool KEqV(int layer) => AttentionKEqV && !IsSliding(layer);

    public int LayerKvHeads(int layer) => KEqV(layer) ? NumGlobalKeyValueHeads ?? NumKeyValueHeads : NumKeyValueHeads;

    public static Gemma4TextConfig Load(string configPath) => From(HfConfig.Load(configPath));

    private static int? MaxPositions(HfConfig hf, string p)
    {
        int? max = null;
        Harness.Engine.Config.ConfigReads.Validate(() => max = hf.GetIntOrNull(p + "max_position_embeddings"));
        return max;
    }

    public static Gemma4TextConfig From(HfConfig hf)
    {
        if (hf.ModelType is not ("gemma4" or "gemma4_text"))
            throw new ConfigException(hf.SourceName, "model_type", $"is '{hf.ModelType}', expected gemma4 or gemma4_text");
        string p = hf.Has("text_config") ? "text_config." : "";
        int layers = hf.GetInt(p + "num_hidden_layers", 30);
        var types = hf.GetStringListOrNull(p + "layer_types")
            ?? Enumerable.Range(0, layers).Select(i => (i + 1) % 6 != 0 ? "sliding_attention" : "full_attention").ToArray();
        if (types.Length != layers)
            throw new ConfigException(hf.SourceName, p + "layer_types", $"has {types.Length} entries for {layers} layers");
        foreach (var (t, i) in types.Select((t, i) => (t, i)))
            if (t is not ("sliding_attention" or "full_attention"))
                throw new ConfigException(hf.SourceName, $"{p}layer_types.{i}", $"is '{t}'; known: sliding_attention, full_attention");
        if (types.Length > 0) types[^1] = "full_attention";                          // HF forces the last layer to full
        var rope = new Dictionary<string, Gemma4Rope>();
        foreach (var t in types.Distinct())
        {
            string rp = $"{p}rope_parameters.{t}";
            bool has = hf.Has(rp);
            string type = has ? hf.GetString(rp + ".rope_type", "default") : t == "full_attention" ? "proportional" : "default";
            if (type is not ("default" or "proportional"))
                throw new ConfigException(hf.SourceName, rp + ".rope_type", $"is '{type}'; the engine supports default and proportional");
            double theta = has ? hf.GetDouble(rp + ".rope_theta") : t == "full_attention" ? 1e6 : 1e4;
            double partial = has ? hf.GetDouble(rp + ".partial_rotary_factor", 1.0) : t == "full_attention" ? 0.25 : 1.0;
            rope[t] = new Gemma4Rope(type, theta, partial, has ? hf.GetDouble(rp + ".factor", 1.0) : 1.0);
        }
        string bidi = hf.GetStringOrNull(p + "use_bidirectional_attention") ?? "";
        if (bidi == "all")
            throw new ConfigException(hf.SourceName, p + "use_bidirectional_attention", "is 'all' (non-causal text): not supported by the engine");
        bool moe = hf.GetBool(p + "enable_moe_block", false);
        // transformers >= 5.17 writes the full-attention overrides as per_layer_config {"<layer>": {"head_dim", "num_key_value_heads"}}
        // instead of global_head_dim / num_global_key_value_heads (5.12.1); either layout is read.
        int? FullLayerOverride(string key) => Enumerable.Range(0, types.Length).Where(i => types[i] == "full_attention")
            .Select(i => hf.GetIntOrNull($"{p}per_layer_config.{i}.{key}")).FirstOrDefault(v => v is not null);
        var c = new Gemma4TextConfig
        {
            Source = hf.SourceName,
            Path = p,
            VocabSize = hf.GetInt(p + "vocab_size", 262_144),
            MaxPositionEmbeddings = MaxPositions(hf, p),
            HiddenSize = hf.GetInt(p + "hidden_size", 2304),
            IntermediateSize = hf.GetInt(p + "intermediate_size", 9216),
            NumHiddenLayers = layers,
            NumAttentionHeads = hf.GetInt(p + "num_attention_heads", 8),
            NumKeyValueHeads = hf.GetInt(p + "num_key_value_heads", 4),
            HeadDim = hf.GetInt(p + "head_dim", 256),
            // absent from both layouts: transformers' default 512 (5.12.1 `global_head_dim: int = 512`, 5.17
            // `kwargs.pop("global_head_dim", 512)` into per_layer_config); 0 or null: head_dim (5.12.1's attention takes
            // `config.global_head_dim if not self.is_sliding and config.global_head_dim else config.head_dim`)
            GlobalHeadDim = hf.GetIntOrNull(p + "global_head_dim") is int g && g > 0 ? g
                : hf.Has(p + "per_layer_config") ? FullLayerOverride("head_dim") ?? hf.GetInt(p + "head_dim", 256)
                : hf.Has(p + "global_head_dim") || hf.IsNull(p + "global_head_dim") ? hf.GetInt(p + "head_dim", 256)
                : 512,
            NumGlobalKeyValueHeads = hf.GetIntOrNull(p + "num_global_key_value_heads") ?? FullLayerOverride("num_key_value_heads"),
            AttentionKEqV = hf.GetBool(p + "attention_k_eq_v", false),
            AttentionBias = hf.GetBool(p + "attention_bias", false),
            HiddenActivation = hf.GetString(p + "hidden_activation", "gelu_pytorch_tanh"),
            RmsNormEps = hf.GetDouble(p + "rms_norm_eps", 1e-6),
            TieWordEmbeddings = hf.GetBool(p + "tie_word_embeddings", hf.GetBool("tie_word_embeddings", true)),
            SlidingWindow = hf.GetInt(p + "sliding_window", 512),
            LayerTypes = types,
            Rope = rope,
            FinalLogitSoftcapping = hf.GetDoubleOrNull(p + "final_logit_softcapping"),
            UseBidirectionalAttention = bidi.Length == 0 ? null : bidi,
            VocabSizePerLayerInput = hf.GetInt(p + "vocab_size_per_layer_input", 262_144),
            // HF: hidden_size_per_layer_input None turns the per-layer inputs off; absent, the default 256
            HiddenSizePerLayerInput = hf.GetIntOrNull(p + "hidden_size_per_layer_input") ?? (hf.IsNull(p + "hidden_size_per_layer_input") ? 0 : 256),
            NumKvSharedLayers = hf.GetInt(p + "num_kv_shared_layers", 0),
            UseDoubleWideMlp = hf.GetBool(p + "use_double_wide_mlp", false),
            EnableMoeBlock = moe,
            NumExperts = moe ? hf.GetInt(p + "num_experts") : 0,
            TopKExperts = moe ? hf.GetInt(p + "top_k_experts") : 0,
            MoeIntermediateSize = moe ? hf.GetInt(p + "moe_intermediate_size") : 0,
            // gemma4 only: Gemma4Model.forward puts text_config.pad_token_id in place of multimodal tokens. Not read for
            // gemma4_text: there it is only nn.Embedding's padding_idx (an init detail), which no forward can observe.
            PadTokenId = p.Length > 0 ? hf.GetInt(p + "pad_token_id", 0) : 0,
        };
        c = c with
        {
            MultimodalTokenIds = new[] { "image_token_id", "video_token_id", "audio_token_id" }
                .Select(k => p.Length > 0 ? TokenId(hf, k) : null).OfType<int>().ToArray(),
            VisionTokenIds = new[] { "image_token_id", "video_token_id" }
                .Select(k => p.Length > 0 ? TokenId(hf, k) : null).OfType<int>().ToArray(),
        };
        if (moe && (c.TopKExperts < 1 || c.TopKExperts > c.NumExperts))
            throw new ConfigException(hf.SourceName, p + "top_k_experts", $"is {c.TopKExperts}; it must be in [1, num_experts={c.NumExperts}]");
        return c;
    }
}
