using System.Text.Json;
using Harness.Engine.Config;

namespace Harness.Engine.Models.Gemma4.Vision;

/// <summary>
/// Gemma4VisionConfig (HF configuration_gemma4.py): the "vision_config" object of a Gemma4 config.json (or the whole file for a
/// gemma4_vision checkpoint). Every field the tower reads is required (HF writes them all); rope_parameters must be the
/// default type (the only one the 2-D vision RoPE is defined for here).
/// </summary>
public sealed record Gemma4VisionConfig
{
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required string HiddenActivation { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public required int PoolingKernelSize { get; init; }
    public required int PatchSize { get; init; }
    public required int PositionEmbeddingSize { get; init; }
    public required bool UseClippedLinears { get; init; }
    public required bool Standardize { get; init; }

    public static Gemma4VisionConfig Load(string configPath)
    {
        using var doc = JsonDocument.Parse(IO.InputFiles.ReadCapped(configPath, IO.InputFiles.ConfigMaxBytes, "config file"));   // a regular file below the cap (issue 24)
        var root = new ConfigNode(doc.RootElement.Clone(), "", configPath);
        var node = root.OptionalString("model_type") == "gemma4_vision" ? root
            : root.Child("vision_config") ?? throw root.Error("vision_config", "is missing: the model has no vision tower");
        return Read(node);
    }

    public static Gemma4VisionConfig Read(ConfigNode n)
    {
        var rope = n.Child("rope_parameters") ?? throw n.Error("rope_parameters", "is missing");
        var ropeType = rope.RequiredString("rope_type");
        // 5.12.1 calls the 2-D RoPE "default", 5.17 "axial": the same inv_freq over head_dim/2 and the same halves per axis.
        if (ropeType is not ("default" or "axial"))
            throw rope.Error("rope_type", $"is '{ropeType}'; the Gemma4 vision tower's 2-D RoPE is 'default' (transformers 5.12) or 'axial' (5.17)");
        var c = new Gemma4VisionConfig
        {
            HiddenSize = n.RequiredInt("hidden_size"),
            IntermediateSize = n.RequiredInt("intermediate_size"),
            NumHiddenLayers = n.RequiredInt("num_hidden_layers"),
            NumAttentionHeads = n.RequiredInt("num_attention_heads"),
            NumKeyValueHeads = n.RequiredInt("num_key_value_heads"),
            HeadDim = n.RequiredInt("head_dim"),
            HiddenActivation = n.RequiredString("hidden_activation"),
            RmsNormEps = n.RequiredDouble("rms_norm_eps"),
            RopeTheta = rope.RequiredDouble("rope_theta"),
            PoolingKernelSize = n.RequiredInt("pooling_kernel_size"),
            PatchSize = n.RequiredInt("patch_size"),
            PositionEmbeddingSize = n.RequiredInt("position_embedding_size"),
            UseClippedLinears = n.RequiredBool("use_clipped_linears"),
            Standardize = n.RequiredBool("standardize"),
        };
        if (c.NumAttentionHeads % c.NumKeyValueHeads != 0)
            throw n.Error("num_key_value_heads", $"{c.NumKeyValueHeads} does not divide num_attention_heads {c.NumAttentionHeads}");
        if (c.HeadDim % 4 != 0)
            throw n.Error("head_dim", $"{c.HeadDim} must be a multiple of 4 (two rotary halves of even size)");
        return c;
    }
}
