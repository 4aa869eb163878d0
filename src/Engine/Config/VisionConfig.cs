namespace Harness.Engine.Config;

/// <summary>
/// "vision_config" of a multimodal HF config. Vision towers differ widely (ViT/SigLIP, qwen2-vl, gemma3n's MobileNet),
/// so only hidden_size is required; the rest is null when the tower does not have it. Where towers spell a field
/// differently, both spellings are read (num_hidden_layers/depth, num_attention_heads/num_heads, ...).
/// </summary>
public sealed record VisionConfig
{
    public required string JsonPath { get; init; }
    /// <summary>model_type ("siglip_vision_model", "qwen2_vl_vision", "gemma4_vision", ...)</summary>
    public string? ModelType { get; init; }
    /// <summary>hidden_size (for qwen2-vl: the width the merger projects to; the tower's own width is <see cref="EmbedDim"/>)</summary>
    public required int HiddenSize { get; init; }
    /// <summary>embed_dim (qwen2-vl)</summary>
    public int? EmbedDim { get; init; }
    /// <summary>num_hidden_layers, or depth</summary>
    public int? NumHiddenLayers { get; init; }
    /// <summary>num_attention_heads, or num_heads</summary>
    public int? NumAttentionHeads { get; init; }
    /// <summary>num_key_value_heads</summary>
    public int? NumKeyValueHeads { get; init; }
    /// <summary>head_dim</summary>
    public int? HeadDim { get; init; }
    /// <summary>intermediate_size</summary>
    public int? IntermediateSize { get; init; }
    /// <summary>mlp_ratio (qwen2-vl)</summary>
    public double? MlpRatio { get; init; }
    /// <summary>patch_size</summary>
    public int? PatchSize { get; init; }
    /// <summary>temporal_patch_size (qwen2-vl)</summary>
    public int? TemporalPatchSize { get; init; }
    /// <summary>spatial_merge_size (qwen2-vl)</summary>
    public int? SpatialMergeSize { get; init; }
    /// <summary>image_size</summary>
    public int? ImageSize { get; init; }
    /// <summary>num_channels, or in_channels</summary>
    public int? NumChannels { get; init; }
    /// <summary>hidden_act or hidden_activation, as written</summary>
    public string? HiddenAct { get; init; }
    /// <summary>layer_norm_eps, or rms_norm_eps</summary>
    public double? NormEps { get; init; }
    /// <summary>rope_parameters of the tower, when it has them (gemma4)</summary>
    public RopeParameters? Rope { get; init; }

    internal static VisionConfig Read(ConfigNode n)
    {
        string? act = n.FirstPresent("hidden_act", "hidden_activation");
        string? eps = n.FirstPresent("layer_norm_eps", "rms_norm_eps");
        string? layers = n.FirstPresent("num_hidden_layers", "depth");
        string? heads = n.FirstPresent("num_attention_heads", "num_heads");
        string? channels = n.FirstPresent("num_channels", "in_channels");
        return new VisionConfig
        {
            JsonPath = n.Path,
            ModelType = n.OptionalString("model_type"),
            HiddenSize = n.RequiredInt("hidden_size"),
            EmbedDim = n.OptionalInt("embed_dim"),
            NumHiddenLayers = layers is null ? null : n.OptionalInt(layers),
            NumAttentionHeads = heads is null ? null : n.OptionalInt(heads),
            NumKeyValueHeads = n.OptionalInt("num_key_value_heads"),
            HeadDim = n.OptionalInt("head_dim"),
            IntermediateSize = n.OptionalInt("intermediate_size"),
            MlpRatio = n.OptionalDouble("mlp_ratio"),
            PatchSize = n.OptionalInt("patch_size"),
            TemporalPatchSize = n.OptionalInt("temporal_patch_size"),
            SpatialMergeSize = n.OptionalInt("spatial_merge_size"),
            ImageSize = n.OptionalInt("image_size"),
            NumChannels = channels is null ? null : n.OptionalInt(channels),
            HiddenAct = act is null ? null : n.OptionalString(act),
            NormEps = eps is null ? null : n.OptionalDouble(eps),
            Rope = n.Child("rope_parameters") is { } rp ? RopeParameters.FromNew(rp, null, null) : null,
        };
    }
}
