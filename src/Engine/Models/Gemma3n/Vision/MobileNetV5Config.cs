using System.Globalization;
using System.Text.Json;
using Harness.Engine.Config;

namespace Harness.Engine.Models.Gemma3n.Vision;

/// <summary>The kinds of block timm's MobileNetV5 stacks (timm/models/_efficientnet_builder.py, _decode_block_str).</summary>
public enum MobileNetV5BlockType
{
    /// <summary>"er": EdgeResidual (FusedMBConv): conv_exp k x k (stride) -> bn1 (norm + act) -> conv_pwl 1x1 -> bn2 (norm).</summary>
    EdgeResidual,
    /// <summary>"uir": UniversalInvertedResidual: dw_start -> pw_exp -> dw_mid -> pw_proj -> layer_scale.</summary>
    UniversalInvertedResidual,
    /// <summary>"mqa": MobileAttention with MultiQueryAttention2d: norm -> attn -> layer_scale.</summary>
    MultiQueryAttention,
}

/// <summary>
/// One block of the stack as timm's EfficientNetBuilder builds it (the decoded block string with the builder's
/// channel rounding and the only-first-block-of-a-stage-strides rule applied), with its input channels.
/// </summary>
public sealed record MobileNetV5Block(
    MobileNetV5BlockType Type, int Stage, int Index, int InChannels, int OutChannels, int Stride,
    int KernelSize, int StartKernelSize, double ExpRatio, int Heads, int KeyDim, int ValueDim, int KvStride)
{
    /// <summary>has_skip = (in_chs == out_chs and stride == 1) and not noskip (no block string of the 300m stack says noskip).</summary>
    public bool HasSkip => InChannels == OutChannels && Stride == 1;

    /// <summary>mid_chs = make_divisible(in_chs * exp_ratio) (EdgeResidual and UniversalInvertedResidual).</summary>
    public int MidChannels => MobileNetV5Config.MakeDivisible(InChannels * ExpRatio);
}

/// <summary>
/// Gemma3n's vision_config (HF Gemma3nVisionConfig, model_type gemma3n_vision) as the engine's MobileNetV5 tower reads it.
/// HF hands <c>architecture</c> and <c>model_args</c> to <c>timm.create_model(architecture, pretrained=False,
/// num_classes=0, **model_args)</c> (TimmWrapperModel); the block stack is fixed by the architecture name
/// (<c>mobilenetv5_300m_enc</c>: timm's <c>_gen_mobilenet_v5</c> arch_def, the only one Gemma3n uses), so the fields a
/// checkpoint can vary are <c>model_args</c>' <c>channel_multiplier</c> (timm's round_channels of every block's
/// out_chs; the stem stays 64 when it is below 1, timm's fix_stem) and <c>msfa_output_resolution</c> (the neck's output
/// grid, 16 by default). Any other model_args key would change the tower in a way this port does not follow: it is one
/// line naming the key. <c>hidden_size</c> must equal the encoder's output width (MobileNetV5Encoder's num_features,
/// 2048), which Gemma3nModel.get_image_features reshapes by.
/// </summary>
public sealed record MobileNetV5Config
{
    public const string Architecture = "mobilenetv5_300m_enc";
    /// <summary>MobileNetV5Encoder: self.num_features = self.head_hidden_size = 2048 (the MSFA's out_chs).</summary>
    public const int NumFeatures = 2048;
    /// <summary>_gen_mobilenet_v5: stem_size=64.</summary>
    public const int StemSize = 64;
    /// <summary>RmsNorm2d(channels, eps=1e-6): timm's norm_layer (every norm of the tower) takes no eps from the config.</summary>
    public const double RmsNormEps = 1e-6;
    /// <summary>MobileNetV5MultiScaleFusionAdapter(expansion_ratio=2.0).</summary>
    public const double MsfaExpansionRatio = 2.0;

    /// <summary>
    /// timm's mobilenetv5_300m_enc arch_def (timm/models/mobilenetv5.py, _gen_mobilenet_v5, the non-"base" branch),
    /// verbatim: one list of block strings per stage.
    /// </summary>
    public static readonly string[][] ArchDef =
    [
        // Stage 0: 128x128 in
        ["er_r1_k3_s2_e4_c128", "er_r1_k3_s1_e4_c128", "er_r1_k3_s1_e4_c128"],
        // Stage 1: 256x256 in
        ["uir_r1_a3_k5_s2_e6_c256", "uir_r1_a5_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256", "uir_r1_a5_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256"],
        // Stage 2: 640x640 in
        [
            "uir_r1_a5_k5_s2_e6_c640", .. Enumerable.Repeat("uir_r1_a5_k0_s1_e4_c640", 7), "uir_r1_a0_k0_s1_e1_c640",
            .. Enumerable.Range(0, 14).SelectMany(_ => new[] { "mqa_r1_k3_h12_v2_s1_d64_c640", "uir_r1_a0_k0_s1_e2_c640" }),
        ],
        // Stage 3: 1280x1280 in
        [
            "uir_r1_a5_k5_s2_e6_c1280",
            .. Enumerable.Range(0, 19).SelectMany(_ => new[] { "mqa_r1_k3_h16_s1_d96_c1280", "uir_r1_a0_k0_s1_e2_c1280" }),
        ],
    ];

    /// <summary>vision_config.hidden_size: the width of the tower's output and of embed_vision's input.</summary>
    public required int HiddenSize { get; init; }
    /// <summary>model_args.channel_multiplier (timm's default 1.0).</summary>
    public required double ChannelMultiplier { get; init; }
    /// <summary>model_args.msfa_output_resolution (timm's default 16): the tower's output grid is this square.</summary>
    public required int MsfaOutputResolution { get; init; }

    /// <summary>conv_stem's out channels: round_chs_fn(stem_size) unless fix_stem (channel_multiplier &lt; 1).</summary>
    public int StemChannels => ChannelMultiplier < 1.0 ? StemSize : RoundChannels(StemSize);

    /// <summary>The blocks, stage by stage, as EfficientNetBuilder builds them.</summary>
    public IReadOnlyList<MobileNetV5Block> Blocks => _blocks ??= Build();
    private IReadOnlyList<MobileNetV5Block>? _blocks;

    /// <summary>
    /// The stage outputs the MSFA fuses: msfa_indices (-2, -1) over feature_info [stem, stage 0..3] are the last two
    /// stages' outputs (feature_take_indices(5, (-2, -1)) = [3, 4]; forward_features counts the stem as 0, each stage +1).
    /// </summary>
    public int[] MsfaStages => [ArchDef.Length - 2, ArchDef.Length - 1];

    /// <summary>MSFA in_chs: the sum of the fused stages' channels.</summary>
    public int MsfaInChannels => MsfaStages.Sum(s => Blocks.Last(b => b.Stage == s).OutChannels);

    /// <summary>
    /// round_channels(channels, multiplier, divisor=8, channel_min=None, round_limit=0.9):
    /// <c>if not multiplier: return channels; return make_divisible(channels * multiplier, divisor, channel_min, round_limit)</c>.
    /// </summary>
    public int RoundChannels(int channels) => ChannelMultiplier == 0 ? channels : MakeDivisible(channels * ChannelMultiplier);

    /// <summary>
    /// timm.layers.helpers.make_divisible(v, divisor=8, min_value=None, round_limit=.9):
    /// <code>
    /// min_value = min_value or divisor
    /// new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    /// if new_v &lt; round_limit * v: new_v += divisor
    /// </code>
    /// </summary>
    public static int MakeDivisible(double v, int divisor = 8, double roundLimit = 0.9)
    {
        int newV = Math.Max(divisor, (int)(v + divisor / 2.0) / divisor * divisor);
        if (newV < roundLimit * v) newV += divisor;
        return newV;
    }

    private IReadOnlyList<MobileNetV5Block> Build()
    {
        var blocks = new List<MobileNetV5Block>();
        int inChs = StemChannels;
        for (int stage = 0; stage < ArchDef.Length; stage++)
            for (int i = 0; i < ArchDef[stage].Length; i++)
            {
                var b = Decode(ArchDef[stage][i], stage, i, inChs);
                blocks.Add(b);
                inChs = b.OutChannels;                                  // self.in_chs = ba['out_chs']
            }
        return blocks;
    }

    /// <summary>
    /// _decode_block_str for the three block types the stack uses, then the builder's per-block rules:
    /// <c>if block_idx >= 1: block_args['stride'] = 1</c> and <c>ba['out_chs'] = self.round_chs_fn(ba['out_chs'])</c>.
    /// Strings: er_r1_k3_s2_e4_c128 (k: exp kernel), uir_r1_a3_k5_s2_e6_c256 (a: dw_start kernel, k: dw_mid kernel; 0 =
    /// none), mqa_r1_k3_h12_v2_s1_d64_c640 (k: kv down-conv kernel, h: heads, v: kv_stride, d: key and value dim).
    /// </summary>
    private MobileNetV5Block Decode(string text, int stage, int index, int inChs)
    {
        var ops = text.Split('_');
        var opt = new Dictionary<string, int>();
        double exp = 1.0;
        foreach (var op in ops.Skip(1))
        {
            int digit = op.IndexOfAny("0123456789".ToCharArray());
            if (digit <= 0) throw new InvalidOperationException($"mobilenetv5 arch_def: cannot decode '{op}' of '{text}'");
            string key = op[..digit];
            if (key == "e") exp = double.Parse(op[digit..], CultureInfo.InvariantCulture);
            else opt[key] = int.Parse(op[digit..], CultureInfo.InvariantCulture);
        }
        if (opt["r"] != 1) throw new InvalidOperationException($"mobilenetv5 arch_def: repeats other than 1 in '{text}'");
        int stride = index >= 1 ? 1 : opt["s"];
        int outChs = RoundChannels(opt["c"]);
        return ops[0] switch
        {
            "er" => new MobileNetV5Block(MobileNetV5BlockType.EdgeResidual, stage, index, inChs, outChs, stride, opt["k"], 0, exp, 0, 0, 0, 1),
            "uir" => new MobileNetV5Block(MobileNetV5BlockType.UniversalInvertedResidual, stage, index, inChs, outChs, stride, opt["k"],
                opt.GetValueOrDefault("a"), exp, 0, 0, 0, 1),
            "mqa" => new MobileNetV5Block(MobileNetV5BlockType.MultiQueryAttention, stage, index, inChs, outChs, stride, opt["k"], 0, 1.0,
                opt["h"], opt["d"], opt["d"], opt.GetValueOrDefault("v", 1)),
            _ => throw new InvalidOperationException($"mobilenetv5 arch_def: unknown block type in '{text}'"),
        };
    }

    /// <summary>The vision_config of a gemma3n config.json (or the whole file of a gemma3n_vision one).</summary>
    public static MobileNetV5Config Load(string configPath)
    {
        using var doc = JsonDocument.Parse(IO.InputFiles.ReadCapped(configPath, IO.InputFiles.ConfigMaxBytes, "config file"));
        var root = new ConfigNode(doc.RootElement.Clone(), "", configPath);
        var node = root.OptionalString("model_type") == "gemma3n_vision" ? root
            : root.Child("vision_config") ?? throw root.Error("vision_config", "is missing: the model has no vision tower");
        return Read(node);
    }

    public static MobileNetV5Config Read(ConfigNode n)
    {
        string arch = n.RequiredString("architecture");
        if (arch != Architecture)
            throw n.Error("architecture", $"is '{arch}': the engine's Gemma3n vision tower is timm's {Architecture} (MobileNetV5Encoder) only");
        double multiplier = 1.0;
        int resolution = 16;
        if (n.Child("model_args") is ConfigNode args)
        {
            foreach (var p in args.Element.EnumerateObject())
                if (p.Name is not ("channel_multiplier" or "msfa_output_resolution"))
                    throw args.Error(p.Name, $"is a timm.create_model argument the engine's {Architecture} does not follow (it reads channel_multiplier and msfa_output_resolution)");
            multiplier = args.OptionalDouble("channel_multiplier") ?? multiplier;
            resolution = args.OptionalInt("msfa_output_resolution") ?? resolution;
            if (!(multiplier > 0) || double.IsInfinity(multiplier)) throw args.Error("channel_multiplier", $"must be a positive number, got {multiplier}");
            if (resolution < 1) throw args.Error("msfa_output_resolution", $"must be at least 1, got {resolution}");
        }
        var c = new MobileNetV5Config { HiddenSize = n.RequiredInt("hidden_size"), ChannelMultiplier = multiplier, MsfaOutputResolution = resolution };
        if (c.HiddenSize != NumFeatures)
            throw n.Error("hidden_size", $"is {c.HiddenSize}, but {Architecture}'s output (MobileNetV5Encoder.num_features) is {NumFeatures} channels wide");
        return c;
    }
}
