using Harness.Engine.Config;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// Qwen2VLConfig as the engine reads it: the text decoder's settings (text_config, with rope_parameters.mrope_section),
/// the vision tower's (vision_config: depth, embed_dim, num_heads, mlp_ratio, patch_size, temporal_patch_size,
/// spatial_merge_size, in_channels, hidden_size = the merger's output width) and the special token ids at the root.
/// Every field the engine uses is required here (no silent library default); errors name the file and the field.
/// </summary>
public sealed record Qwen2VlConfig
{
    public required TextConfig Text { get; init; }
    /// <summary>rope_parameters.mrope_section: rotary pairs per position stream (temporal, height, width); sums to head_dim/2.</summary>
    public required int[] MropeSection { get; init; }
    /// <summary>HF's Qwen2VLAttention: head_dim = hidden_size / num_attention_heads (a head_dim field is ignored).</summary>
    public int HeadDim => Text.HiddenSize / Text.NumAttentionHeads;
    public required double RmsNormEps { get; init; }

    public required int VisionDepth { get; init; }
    public required int VisionEmbedDim { get; init; }
    public required int VisionHeads { get; init; }
    public int VisionHeadDim => VisionEmbedDim / VisionHeads;
    /// <summary>fc1's width: int(embed_dim * mlp_ratio).</summary>
    public required int VisionMlpHidden { get; init; }
    public required string VisionHiddenAct { get; init; }
    public required int PatchSize { get; init; }
    public required int TemporalPatchSize { get; init; }
    public required int SpatialMergeSize { get; init; }
    public required int InChannels { get; init; }
    /// <summary>vision_config.hidden_size: the merger's output, which must equal the text hidden_size.</summary>
    public required int VisionOutHidden { get; init; }

    public required int ImageTokenId { get; init; }
    public required int VideoTokenId { get; init; }
    public required int VisionStartTokenId { get; init; }
    public required int VisionEndTokenId { get; init; }

    /// <summary>One flattened patch: in_channels * temporal_patch_size * patch_size^2 values (the Conv3d's kernel volume).</summary>
    public int PatchVolume => InChannels * TemporalPatchSize * PatchSize * PatchSize;

    public static Qwen2VlConfig Load(string path) => From(HfConfig.Load(path));

    public static Qwen2VlConfig From(HfConfig hf)
    {
        if (hf.ModelType != "qwen2_vl")
            throw new ConfigException(hf.SourceName, "model_type", $"is '{hf.ModelType}', expected 'qwen2_vl'");
        var text = hf.Text;
        string tp = text.JsonPath.Length == 0 ? "" : text.JsonPath + ".";
        if (text.HiddenSize % text.NumAttentionHeads != 0)
            throw new ConfigException(hf.SourceName, tp + "hidden_size",
                $"{text.HiddenSize} is not divisible by num_attention_heads {text.NumAttentionHeads} (Qwen2VLAttention requires it)");
        var section = text.Rope.MropeSection
            ?? throw new ConfigException(hf.SourceName, tp + "rope_parameters.mrope_section", "is missing");
        if (text.Rope.RopeType != "default")
            throw new ConfigException(hf.SourceName, tp + "rope_parameters.rope_type",
                $"is '{text.Rope.RopeType}'; the engine's Qwen2-VL supports the default M-RoPE only ('default', or the legacy 'mrope')");
        int headDim = text.HiddenSize / text.NumAttentionHeads;
        if (section.Length != 3 || section.Sum() != headDim / 2)
            throw new ConfigException(hf.SourceName, tp + "rope_parameters.mrope_section",
                $"is [{string.Join(", ", section)}]: it needs 3 entries summing to head_dim/2 = {headDim / 2}");
        string v = "vision_config.";
        int embed = hf.GetInt(v + "embed_dim");
        int heads = hf.GetInt(v + "num_heads");
        if (embed % heads != 0)
            throw new ConfigException(hf.SourceName, v + "embed_dim", $"{embed} is not divisible by num_heads {heads}");
        int outHidden = hf.GetInt(v + "hidden_size");
        if (outHidden != text.HiddenSize)
            throw new ConfigException(hf.SourceName, v + "hidden_size",
                $"is {outHidden}, but the merger's output feeds the text model of hidden_size {text.HiddenSize}");
        return new Qwen2VlConfig
        {
            Text = text,
            MropeSection = section,
            RmsNormEps = text.NormEps ?? throw new ConfigException(hf.SourceName, tp + "rms_norm_eps", "is missing"),
            VisionDepth = hf.GetInt(v + "depth"),
            VisionEmbedDim = embed,
            VisionHeads = heads,
            VisionMlpHidden = (int)(embed * hf.GetDouble(v + "mlp_ratio")),
            // Released checkpoints omit hidden_act and write in_chans: HF then uses quick_gelu and reads in_chans as in_channels.
            VisionHiddenAct = hf.GetStringOrNull(v + "hidden_act") ?? "quick_gelu",
            PatchSize = hf.GetInt(v + "patch_size"),
            TemporalPatchSize = hf.GetInt(v + "temporal_patch_size"),
            SpatialMergeSize = hf.GetInt(v + "spatial_merge_size"),
            InChannels = hf.GetIntOrNull(v + "in_channels") ?? hf.GetInt(v + "in_chans"),
            VisionOutHidden = outHidden,
            ImageTokenId = hf.GetInt("image_token_id"),
            VideoTokenId = hf.GetInt("video_token_id"),
            VisionStartTokenId = hf.GetInt("vision_start_token_id"),
            VisionEndTokenId = hf.GetInt("vision_end_token_id"),
        };
    }
}

/// <summary>
/// Construction options of <see cref="Qwen2VlForConditionalGeneration"/>: the faults a scenario re-creates, as explicit inputs.
/// </summary>
public sealed record Qwen2VlOptions
{
    /// <summary>
    /// The reported bug: the attention output viewed as (bsz, q_len, hidden_size) instead of (*input_shape, -1). Right at
    /// TP=1 (heads * head_dim == hidden_size); under TP each rank holds heads/tp heads and the view fails with torch's
    /// "shape '[1, T, hidden]' is invalid for input of size T*hidden/tp".
    /// </summary>
    public bool AttentionReshapeHiddenSize { get; init; }

    /// <summary>Fault <see cref="Runtime.Faults.MropeDecodeDeltaIgnored"/>: decode steps at position cache length, without the
    /// prompt's rope delta (HF: <c>delta = cache_position[0] + self.rope_deltas</c>).</summary>
    public bool DecodeRopeDeltaIgnored { get; init; }

    public static Qwen2VlOptions Default { get; } = new();
}
