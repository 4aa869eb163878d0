using System.Text.Json;
using Harness.Engine.Config;

namespace Harness.Engine.Models.Gemma3n.Audio;

/// <summary>
/// Gemma3nAudioConfig (HF configuration_gemma3n.py) as the audio tower <see cref="Gemma3nAudioEncoder"/> reads it: the
/// "audio_config" object of a gemma3n config.json (or the whole file of a gemma3n_audio one). Every field the tower reads
/// is required (HF writes them all): a missing one is one line naming the file and the JSON path, never a silent default.
/// vocab_size and vocab_offset are the embedder's (<see cref="Gemma3nEmbedderSettings"/>), not the tower's.
/// </summary>
public sealed record Gemma3nAudioConfig
{
    /// <summary>hidden_size (E4B: 1536).</summary>
    public required int HiddenSize { get; init; }
    /// <summary>input_feat_size: mel bins per frame (128).</summary>
    public required int InputFeatSize { get; init; }
    /// <summary>rms_norm_eps: the light conv's two norms (the other RMSNorms keep Gemma3nRMSNorm's default 1e-6).</summary>
    public required double RmsNormEps { get; init; }
    /// <summary>gradient_clipping: the clamp bound of the conformer (1e10).</summary>
    public required double GradientClipping { get; init; }
    /// <summary>
    /// conf_attention_chunk_size: the query block W. Every query sees relative positions -R..L whatever W, but a fully masked
    /// query row (a padded frame whose window holds no valid key) is HF's uniform average over its block's C = W + L + R
    /// keys, so W shows in the attention's output at padded frames (12).
    /// </summary>
    public required int ConfAttentionChunkSize { get; init; }
    /// <summary>conf_attention_context_left: the token itself plus left - 1 earlier ones (13).</summary>
    public required int ConfAttentionContextLeft { get; init; }
    public required int ConfAttentionContextRight { get; init; }
    public required double ConfAttentionLogitCap { get; init; }
    public required int ConfNumAttentionHeads { get; init; }
    public required int ConfNumHiddenLayers { get; init; }
    public required int ConfConvKernelSize { get; init; }
    /// <summary>conf_reduction_factor: the encoder keeps every r-th frame at its end (4).</summary>
    public required int ConfReductionFactor { get; init; }
    /// <summary>conf_residual_weight: the feed-forward's post-norm scale before its residual add (0.5).</summary>
    public required double ConfResidualWeight { get; init; }
    /// <summary>sscp_conv_channel_size: the two Conv2d output channel counts (128, 32).</summary>
    public required int[] SscpConvChannelSize { get; init; }
    /// <summary>sscp_conv_group_norm_eps: the cumulative group norms' eps (1e-3).</summary>
    public required double SscpConvGroupNormEps { get; init; }
    /// <summary>sscp_conv_kernel_size: (time, frequency) kernel of each conv ((3, 3), (3, 3)).</summary>
    public required (int Time, int Freq)[] SscpConvKernelSize { get; init; }
    /// <summary>sscp_conv_stride_size: (time, frequency) stride of each conv ((2, 2), (2, 2)).</summary>
    public required (int Time, int Freq)[] SscpConvStrideSize { get; init; }

    public int HeadDim => HiddenSize / ConfNumAttentionHeads;
    /// <summary>max_past_horizon = max(0, conf_attention_context_left - 1).</summary>
    public int MaxPastHorizon => Math.Max(0, ConfAttentionContextLeft - 1);
    /// <summary>time_stride_product: the product of the convs' time strides (the mask's subsampling).</summary>
    public int TimeStrideProduct => SscpConvStrideSize[0].Time * SscpConvStrideSize[1].Time;

    /// <summary>f_out = (f_in + 1 + 1 - kernel_w) // stride_w + 1 of each conv (HF pads frequency by 1 on both sides).</summary>
    public int FreqOut(int conv) => ((conv == 0 ? InputFeatSize : FreqOut(0)) + 2 - SscpConvKernelSize[conv].Freq) / SscpConvStrideSize[conv].Freq + 1;

    public static Gemma3nAudioConfig Load(string configPath)
    {
        using var doc = JsonDocument.Parse(IO.InputFiles.ReadCapped(configPath, IO.InputFiles.ConfigMaxBytes, "config file"));
        var root = new ConfigNode(doc.RootElement.Clone(), "", configPath);
        var node = root.OptionalString("model_type") == "gemma3n_audio" ? root
            : root.Child("audio_config") ?? throw root.Error("audio_config", "is missing: the model has no audio tower");
        return Read(node);
    }

    public static Gemma3nAudioConfig Read(ConfigNode n)
    {
        var c = new Gemma3nAudioConfig
        {
            HiddenSize = n.RequiredInt("hidden_size"),
            InputFeatSize = n.RequiredInt("input_feat_size"),
            RmsNormEps = n.RequiredDouble("rms_norm_eps"),
            GradientClipping = n.RequiredDouble("gradient_clipping"),
            ConfAttentionChunkSize = n.RequiredInt("conf_attention_chunk_size"),
            ConfAttentionContextLeft = n.RequiredInt("conf_attention_context_left"),
            ConfAttentionContextRight = n.RequiredInt("conf_attention_context_right"),
            ConfAttentionLogitCap = n.RequiredDouble("conf_attention_logit_cap"),
            ConfNumAttentionHeads = n.RequiredInt("conf_num_attention_heads"),
            ConfNumHiddenLayers = n.RequiredInt("conf_num_hidden_layers"),
            ConfConvKernelSize = n.RequiredInt("conf_conv_kernel_size"),
            ConfReductionFactor = n.RequiredInt("conf_reduction_factor"),
            ConfResidualWeight = n.RequiredDouble("conf_residual_weight"),
            SscpConvChannelSize = n.OptionalIntList("sscp_conv_channel_size") ?? throw n.Error("sscp_conv_channel_size", "is missing"),
            SscpConvGroupNormEps = n.RequiredDouble("sscp_conv_group_norm_eps"),
            SscpConvKernelSize = Pairs(n, "sscp_conv_kernel_size"),
            SscpConvStrideSize = Pairs(n, "sscp_conv_stride_size"),
        };
        if (c.SscpConvChannelSize.Length != 2)
            throw n.Error("sscp_conv_channel_size", $"must list 2 channel counts, got {c.SscpConvChannelSize.Length}");
        if (c.ConfNumAttentionHeads < 1 || c.HiddenSize % c.ConfNumAttentionHeads != 0)
            throw n.Error("conf_num_attention_heads", $"{c.ConfNumAttentionHeads} does not divide hidden_size {c.HiddenSize}");
        if (c.HiddenSize % 2 != 0) throw n.Error("hidden_size", $"must be even (sin and cos halves of the timing signal), got {c.HiddenSize}");
        if (c.ConfAttentionChunkSize < 1) throw n.Error("conf_attention_chunk_size", $"must be at least 1, got {c.ConfAttentionChunkSize}");
        if (c.ConfAttentionContextRight < 0) throw n.Error("conf_attention_context_right", $"must not be negative, got {c.ConfAttentionContextRight}");
        if (c.ConfReductionFactor < 1) throw n.Error("conf_reduction_factor", $"must be at least 1, got {c.ConfReductionFactor}");
        if (c.ConfConvKernelSize < 1) throw n.Error("conf_conv_kernel_size", $"must be at least 1, got {c.ConfConvKernelSize}");
        for (int i = 0; i < 2; i++)
            if (c.FreqOut(i) < 1)
                throw n.Error("sscp_conv_kernel_size", $"conv {i} leaves no frequency bins (input_feat_size {c.InputFeatSize})");
        return c;
    }

    /// <summary>A list of two [time, frequency] pairs of positive integers.</summary>
    private static (int, int)[] Pairs(ConfigNode n, string key)
    {
        var v = n.Get(key) ?? throw n.Error(key, "is missing");
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() != 2)
            throw n.Error(key, "must list 2 [time, frequency] pairs");
        var pairs = new (int, int)[2];
        int i = 0;
        foreach (var pair in v.EnumerateArray())
        {
            if (pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2
                || pair.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.Number || !x.TryGetInt32(out var k) || k < 1))
                throw n.Error(key, $"entry {i} must be a [time, frequency] pair of positive integers");
            pairs[i++] = (pair[0].GetInt32(), pair[1].GetInt32());
        }
        return pairs;
    }
}
