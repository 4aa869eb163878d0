using System.Text.Json;

namespace Harness.Engine.Config;

/// <summary>
/// RoPE settings in transformers 5.x's "rope_parameters" shape, whichever way the file stored them:
/// 5.x writes {"rope_type", "rope_theta", "factor", ...}; older files wrote "rope_theta" beside a "rope_scaling"
/// dict (with "type" or "rope_type"). Both end up here. Fields a rope type does not use are null.
/// </summary>
public sealed record RopeParameters
{
    /// <summary>default | linear | dynamic | yarn | longrope | llama3 | proportional | ... as HF names it.</summary>
    public required string RopeType { get; init; }
    public required double RopeTheta { get; init; }
    public double? Factor { get; init; }
    public int? OriginalMaxPositionEmbeddings { get; init; }
    /// <summary>llama3</summary>
    public double? LowFreqFactor { get; init; }
    /// <summary>llama3</summary>
    public double? HighFreqFactor { get; init; }
    /// <summary>yarn</summary>
    public double? BetaFast { get; init; }
    /// <summary>yarn</summary>
    public double? BetaSlow { get; init; }
    /// <summary>yarn / longrope</summary>
    public double? AttentionFactor { get; init; }
    /// <summary>yarn (deepseek)</summary>
    public double? Mscale { get; init; }
    public double? MscaleAllDim { get; init; }
    /// <summary>longrope</summary>
    public double[]? ShortFactor { get; init; }
    public double[]? LongFactor { get; init; }
    /// <summary>Fraction of head_dim that is rotated (gemma4 full attention, phi, ...).</summary>
    public double? PartialRotaryFactor { get; init; }
    /// <summary>Multimodal RoPE sections (qwen2-vl: [temporal, height, width]).</summary>
    public int[]? MropeSection { get; init; }

    /// <summary>The JSON this was read from (rope_parameters entry or legacy rope_scaling), for keys not modelled above.</summary>
    public JsonElement? Raw { get; init; }

    /// <summary>Dotted path of the source in the config file, for messages.</summary>
    public string JsonPath { get; init; } = "";

    public const double DefaultTheta = 10000.0;

    /// <summary>Reads a 5.x "rope_parameters" entry (or a per-layer-type entry); rope_theta is required there or beside it.</summary>
    internal static RopeParameters FromNew(ConfigNode n, double? partialRotaryFallback, double? thetaFallback) =>
        Read(n,
            n.OptionalString("rope_type") ?? n.OptionalString("type") ?? "default",
            n.OptionalDouble("rope_theta") ?? thetaFallback ?? n.RequiredDouble("rope_theta"),
            partialRotaryFallback);

    /// <summary>
    /// Reads the pre-5.x layout: "rope_theta" (default 10000, the PretrainedConfig/Llama default) plus an optional
    /// "rope_scaling" dict. As transformers does when it converts such files: the legacy "type" key names the rope
    /// type, and "mrope" (qwen2-vl) becomes "default" with its mrope_section kept.
    /// </summary>
    internal static RopeParameters FromLegacy(ConfigNode owner, double? thetaOverride = null)
    {
        double theta = thetaOverride ?? owner.OptionalDouble("rope_theta") ?? DefaultTheta;
        double? partial = owner.OptionalDouble("partial_rotary_factor");
        var scaling = owner.Child("rope_scaling");
        if (scaling is not { } s)
            return new RopeParameters { RopeType = "default", RopeTheta = theta, PartialRotaryFactor = partial, JsonPath = owner.PathOf("rope_theta") };
        string type = s.OptionalString("rope_type") ?? s.OptionalString("type") ?? "default";
        if (type == "mrope") type = "default";
        if (type == "su") type = "longrope";
        return Read(s, type, s.OptionalDouble("rope_theta") ?? theta, partial);
    }

    /// <summary>The scaling keys of one rope entry (new or legacy layout alike).</summary>
    private static RopeParameters Read(ConfigNode n, string type, double theta, double? partialRotaryFallback) => new()
    {
        RopeType = type,
        RopeTheta = theta,
        Factor = n.OptionalDouble("factor"),
        OriginalMaxPositionEmbeddings = n.OptionalInt("original_max_position_embeddings"),
        LowFreqFactor = n.OptionalDouble("low_freq_factor"),
        HighFreqFactor = n.OptionalDouble("high_freq_factor"),
        BetaFast = n.OptionalDouble("beta_fast"),
        BetaSlow = n.OptionalDouble("beta_slow"),
        AttentionFactor = n.OptionalDouble("attention_factor"),
        Mscale = n.OptionalDouble("mscale"),
        MscaleAllDim = n.OptionalDouble("mscale_all_dim"),
        ShortFactor = n.OptionalDoubleList("short_factor"),
        LongFactor = n.OptionalDoubleList("long_factor"),
        PartialRotaryFactor = n.OptionalDouble("partial_rotary_factor") ?? partialRotaryFallback,
        MropeSection = n.OptionalIntList("mrope_section"),
        Raw = n.Element.Clone(),
        JsonPath = n.Path,
    };

    /// <summary>A key of the source JSON that has no typed property (null when absent).</summary>
    public double? GetDouble(string key) =>
        Raw is { ValueKind: JsonValueKind.Object } r && r.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
}
