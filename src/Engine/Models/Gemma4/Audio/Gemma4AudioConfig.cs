using System.Text.Json;
using Harness.Engine.Config;

namespace Harness.Engine.Models.Gemma4.Audio;

/// <summary>
/// Gemma4AudioConfig (HF configuration_gemma4.py): the "audio_config" object of a Gemma4 config.json (or the whole file for a
/// gemma4_audio checkpoint). Every field the tower reads is required: HF writes them all, and a missing one is an error naming
/// the file and the path, never a silent default.
/// </summary>
public sealed record Gemma4AudioConfig
{
    public required int HiddenSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    /// <summary>hidden_act: the feed-forward and light-conv activation ("silu" in Gemma-4-E2B).</summary>
    public required string HiddenAct { get; init; }
    /// <summary>subsampling_conv_channels: the two Conv2d output channel counts; the mel bins F must satisfy ceil(ceil(F/2)/2) == channels[0] / 4.</summary>
    public required int[] SubsamplingConvChannels { get; init; }
    public required int ConvKernelSize { get; init; }
    /// <summary>residual_weight: the feed-forward's post-norm scale before its residual add (HF's post_layer_scale).</summary>
    public required double ResidualWeight { get; init; }
    public required int AttentionChunkSize { get; init; }
    public required int AttentionContextLeft { get; init; }
    public required int AttentionContextRight { get; init; }
    public required double AttentionLogitCap { get; init; }
    /// <summary>
    /// The logit written where the block mask is off. HF's attention_invalid_logits_value is NOT read: after the soft cap
    /// every live logit lies in [-cap, cap], so any value below -cap - 104 gives exp() == 0 in float32 and the same
    /// probabilities (and HF's sdpa path, the semantics the engine follows, does not use the field at all); a field no
    /// scenario can observe is not read (`harness run --config-mutations`). HF's default.
    /// </summary>
    public double AttentionInvalidLogitsValue { get; init; } = -1e9;
    public required bool UseClippedLinears { get; init; }
    public required double RmsNormEps { get; init; }
    public required double GradientClipping { get; init; }
    public required int OutputProjDims { get; init; }

    public int HeadDim => HiddenSize / NumAttentionHeads;
    /// <summary>Keys per query block: chunk + (left - 1) past + right future.</summary>
    public int ContextSize => AttentionChunkSize + AttentionContextLeft - 1 + AttentionContextRight;

    public static Gemma4AudioConfig Load(string configPath)
    {
        using var doc = JsonDocument.Parse(IO.InputFiles.ReadCapped(configPath, IO.InputFiles.ConfigMaxBytes, "config file"));   // a regular file below the cap (issue 24)
        var root = new ConfigNode(doc.RootElement.Clone(), "", configPath);
        var node = root.OptionalString("model_type") == "gemma4_audio" ? root
            : root.Child("audio_config") ?? throw root.Error("audio_config", "is missing: the model has no audio tower");
        return Read(node);
    }

    public static Gemma4AudioConfig Read(ConfigNode n)
    {
        var c = new Gemma4AudioConfig
        {
            HiddenSize = n.RequiredInt("hidden_size"),
            NumHiddenLayers = n.RequiredInt("num_hidden_layers"),
            NumAttentionHeads = n.RequiredInt("num_attention_heads"),
            HiddenAct = n.RequiredString("hidden_act"),
            SubsamplingConvChannels = n.OptionalIntList("subsampling_conv_channels") ?? throw n.Error("subsampling_conv_channels", "is missing"),
            ConvKernelSize = n.RequiredInt("conv_kernel_size"),
            ResidualWeight = n.RequiredDouble("residual_weight"),
            AttentionChunkSize = n.RequiredInt("attention_chunk_size"),
            AttentionContextLeft = n.RequiredInt("attention_context_left"),
            AttentionContextRight = n.RequiredInt("attention_context_right"),
            AttentionLogitCap = n.RequiredDouble("attention_logit_cap"),
            UseClippedLinears = n.RequiredBool("use_clipped_linears"),
            RmsNormEps = n.RequiredDouble("rms_norm_eps"),
            GradientClipping = n.RequiredDouble("gradient_clipping"),
            OutputProjDims = n.RequiredInt("output_proj_dims"),
        };
        if (c.SubsamplingConvChannels.Length != 2)
            throw n.Error("subsampling_conv_channels", $"must list 2 channel counts, got {c.SubsamplingConvChannels.Length}");
        if (c.HiddenSize % c.NumAttentionHeads != 0)
            throw n.Error("num_attention_heads", $"{c.NumAttentionHeads} does not divide hidden_size {c.HiddenSize}");
        if (c.AttentionContextLeft < 1) throw n.Error("attention_context_left", $"must be at least 1, got {c.AttentionContextLeft}");
        return c;
    }
}
