using Harness.Engine.Attention;
using Harness.Engine.Capture;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n.Vision;

/// <summary>
/// Gemma3n's vision tower: HF's TimmWrapperModel around timm's MobileNetV5Encoder (<c>mobilenetv5_300m_enc</c>,
/// timm/models/mobilenetv5.py), called as Gemma3nModel.get_image_features calls it
/// (<c>self.vision_tower(pixel_values=pixel_values, do_pooling=False, return_dict=True).last_hidden_state</c>):
/// <code>
/// x = self.conv_stem(x)                              # ConvNormAct(3, 64, 3, stride=2, padding='same'): [B, 64, H/2, W/2]
/// for blk in self.blocks:                            # 4 stages (nn.Sequential) of EdgeResidual / UIR / MobileAttention
///     x = blk(x); if feat_idx in self.msfa_indices: intermediates.append(x)   # stages 2 and 3 (strides 16, 32)
/// return self.msfa(intermediates)                    # MobileNetV5MultiScaleFusionAdapter: [B, 2048, R, R]
/// </code>
/// The engine stays channels last ([B, H, W, C]): a 1x1 conv is one <see cref="Matmul"/> over C, an RmsNorm2d a norm over
/// C. Every module is recorded channels first at its HF path (<see cref="Modules"/>): the stem, every block, each
/// MobileAttention's attn, the MSFA and the tower itself. Runs on the host in the model dtype, each op rounding where
/// torch's does; the convs' 'same' padding is timm's TF-style one (asymmetric where the stride is 2).
/// </summary>
public sealed class MobileNetV5Encoder
{
    public const string DefaultPrefix = "model.vision_tower";

    private readonly MobileNetV5Config _c;
    private readonly IActivationSink _sink;
    private readonly MobileNetV5Conv.Context _ctx;
    private readonly MobileNetV5Conv _stem;
    private readonly IMobileNetV5Block[] _blocks;
    private readonly MobileNetV5Msfa _msfa;

    public string Prefix { get; }
    public MobileNetV5Config Config => _c;

    /// <param name="weights">The checkpoint (HF names: "model.vision_tower.timm_model.blocks.0.0.conv_exp.weight").</param>
    /// <param name="options">The planted faults (<see cref="Gemma3nOptions.VisionSamePadSymmetric"/>,
    /// <see cref="Gemma3nOptions.VisionUirResidualDropped"/>); null: none.</param>
    public MobileNetV5Encoder(IWeightSource weights, MobileNetV5Config config, IActivationSink? sink = null, Gemma3nOptions? options = null,
        MatmulOptions? matmul = null, string prefix = DefaultPrefix)
    {
        _c = config;
        _sink = sink ?? NoCapture.Instance;
        options ??= Gemma3nOptions.Default;
        _ctx = new MobileNetV5Conv.Context(matmul ?? MatmulOptions.Default, options.VisionSamePadSymmetric);
        Prefix = prefix;
        string t = $"{prefix}.timm_model";
        // self.conv_stem = ConvNormAct(in_chans, stem_size, kernel_size=3, stride=2, padding=pad_type, bias=stem_bias (True), norm_layer, act_layer)
        _stem = new MobileNetV5Conv(weights, $"{t}.conv_stem", 3, config.StemChannels, 3, 2, depthwise: false, act: true, _ctx, bias: true);
        _blocks = config.Blocks.Select(b => (IMobileNetV5Block)(b.Type switch
        {
            MobileNetV5BlockType.EdgeResidual => new MobileNetV5EdgeResidual(weights, BlockPath(t, b), b, _ctx),
            MobileNetV5BlockType.UniversalInvertedResidual => new MobileNetV5UniversalInvertedResidual(weights, BlockPath(t, b), b, _ctx,
                layerScale: true, dropResidual: options.VisionUirResidualDropped),
            _ => new MobileNetV5MobileAttention(weights, BlockPath(t, b), b, _ctx, _sink),
        })).ToArray();
        _msfa = new MobileNetV5Msfa(weights, $"{t}.msfa", config, _ctx);
    }

    private static string BlockPath(string timm, MobileNetV5Block b) => $"{timm}.blocks.{b.Stage}.{b.Index}";

    /// <summary>The module paths the tower records, in forward order.</summary>
    public static IReadOnlyList<string> Modules(MobileNetV5Config config, string prefix = DefaultPrefix)
    {
        string t = $"{prefix}.timm_model";
        var list = new List<string> { $"{t}.conv_stem" };
        foreach (var b in config.Blocks)
        {
            if (b.Type == MobileNetV5BlockType.MultiQueryAttention) list.Add($"{BlockPath(t, b)}.attn");
            list.Add(BlockPath(t, b));
        }
        list.AddRange([$"{t}.msfa", prefix]);
        return list;
    }

    /// <summary>
    /// Every tensor the tower reads, with its shape (the constructors check each against it): what a checkpoint of this
    /// config holds under <paramref name="prefix"/>.timm_model.
    /// </summary>
    public static IEnumerable<(string Name, int[] Shape)> ExpectedTensors(MobileNetV5Config c, string prefix = DefaultPrefix)
    {
        string t = $"{prefix}.timm_model";
        IEnumerable<(string, int[])> Cna(string p, int cin, int cout, int k, bool dw) =>
            [($"{p}.conv.weight", [cout, dw ? 1 : cin, k, k]), ($"{p}.bn.weight", [cout])];
        foreach (var x in Cna($"{t}.conv_stem", 3, c.StemChannels, 3, false)) yield return x;
        yield return ($"{t}.conv_stem.conv.bias", [c.StemChannels]);                    // MobileNetV5Encoder(stem_bias=True)
        var uirs = c.Blocks.Select(b => (Path: BlockPath(t, b), Block: b, LayerScale: true))
            .Append(($"{t}.msfa.ffn", new MobileNetV5Block(MobileNetV5BlockType.UniversalInvertedResidual, -1, -1, c.MsfaInChannels,
                MobileNetV5Config.NumFeatures, 1, 0, 0, MobileNetV5Config.MsfaExpansionRatio, 0, 0, 0, 1), false));
        foreach (var (p, b, layerScale) in uirs)
        {
            int mid = b.MidChannels;
            switch (b.Type)
            {
                case MobileNetV5BlockType.EdgeResidual:
                    yield return ($"{p}.conv_exp.weight", [mid, b.InChannels, b.KernelSize, b.KernelSize]);
                    yield return ($"{p}.bn1.weight", [mid]);
                    yield return ($"{p}.conv_pwl.weight", [b.OutChannels, mid, 1, 1]);
                    yield return ($"{p}.bn2.weight", [b.OutChannels]);
                    break;
                case MobileNetV5BlockType.UniversalInvertedResidual:
                    if (b.StartKernelSize > 0) foreach (var x in Cna($"{p}.dw_start", b.InChannels, b.InChannels, b.StartKernelSize, true)) yield return x;
                    foreach (var x in Cna($"{p}.pw_exp", b.InChannels, mid, 1, false)) yield return x;
                    if (b.KernelSize > 0) foreach (var x in Cna($"{p}.dw_mid", mid, mid, b.KernelSize, true)) yield return x;
                    foreach (var x in Cna($"{p}.pw_proj", mid, b.OutChannels, 1, false)) yield return x;
                    if (layerScale) yield return ($"{p}.layer_scale.gamma", [b.OutChannels]);
                    break;
                default:
                    int cin = b.InChannels;
                    yield return ($"{p}.norm.weight", [cin]);
                    yield return ($"{p}.attn.query.proj.weight", [b.Heads * b.KeyDim, cin, 1, 1]);
                    foreach (var (kv, dim) in new[] { ("key", b.KeyDim), ("value", b.ValueDim) })
                    {
                        if (b.KvStride > 1)
                        {
                            yield return ($"{p}.attn.{kv}.down_conv.weight", [cin, 1, b.KernelSize, b.KernelSize]);
                            yield return ($"{p}.attn.{kv}.norm.weight", [cin]);
                        }
                        yield return ($"{p}.attn.{kv}.proj.weight", [dim, cin, 1, 1]);
                    }
                    yield return ($"{p}.attn.output.proj.weight", [b.OutChannels, b.Heads * b.ValueDim, 1, 1]);
                    yield return ($"{p}.layer_scale.gamma", [b.OutChannels]);
                    break;
            }
        }
        yield return ($"{t}.msfa.norm.weight", [MobileNetV5Config.NumFeatures]);
    }

    /// <param name="pixelValues">[B, 3, H, W] pixel_values (channels first, as the processor gives them), any float dtype.</param>
    /// <returns>last_hidden_state [B, 2048, R, R] channels first, in the weights' dtype.</returns>
    public Tensor Forward(Tensor pixelValues)
    {
        if (pixelValues.Rank != 4 || pixelValues.Size(1) != 3)
            throw new ArgumentException($"{Prefix}: pixel_values must be [batch, 3, height, width], got {Shape.Format(pixelValues.Shape)}");
        // pixel_values = pixel_values.to(self.device, self.dtype) (TimmWrapperModel.forward)
        var x = pixelValues.To(_stem.DType).Permute(0, 2, 3, 1).Contiguous();            // [B, H, W, 3]
        string t = $"{Prefix}.timm_model";
        x = Step($"{t}.conv_stem", () => _stem.Forward(x));                               // [B, H/2, W/2, 64]
        var intermediates = new List<Tensor>();
        foreach (var block in _blocks)
        {
            x = Step(block.Path, () => block.Forward(x));
            bool lastOfStage = block.Spec.Index == _c.Blocks.Where(b => b.Stage == block.Spec.Stage).Max(b => b.Index);
            if (lastOfStage && _c.MsfaStages.Contains(block.Spec.Stage)) intermediates.Add(x);   // if feat_idx in self.msfa_indices
        }
        var output = Step($"{t}.msfa", () => _msfa.Forward(intermediates));               // [B, R, R, 2048]
        var nchw = output.Permute(0, 3, 1, 2).Contiguous();                               // last_hidden_state [B, 2048, R, R]
        if (_sink.Wants(Prefix)) _sink.Record(Prefix, 0, nchw, ShardSpec.Whole);
        return nchw;
    }

    /// <summary>
    /// Gemma3nModel.get_image_features after the tower (HF modeling_gemma3n.py 1990-1997):
    /// <code>
    /// vision_outputs = vision_outputs.reshape(vision_outputs.shape[0], self.config.vision_config.hidden_size,
    ///                                         self.config.vision_soft_tokens_per_image).permute(0, 2, 1)
    /// vision_outputs *= self.config.vision_config.hidden_size**0.5
    /// </code>
    /// [B, C, R, R] -> [B * R * R, C] in the tower's dtype (the sqrt(C) product rounded once), the soft tokens embed_vision
    /// receives (<see cref="Gemma3nPrompt.ImageSoftTokens"/>).
    /// </summary>
    public static Tensor ImageSoftTokens(Tensor lastHiddenState, int softTokensPerImage)
    {
        int b = lastHiddenState.Size(0), c = lastHiddenState.Size(1);
        if (lastHiddenState.Size(2) * lastHiddenState.Size(3) != softTokensPerImage)
            throw new ArgumentException($"the vision tower's output {Shape.Format(lastHiddenState.Shape)} is not vision_soft_tokens_per_image {softTokensPerImage} tokens an image");
        var tokens = lastHiddenState.Reshape(b, c, softTokensPerImage).Permute(0, 2, 1).Contiguous().Reshape(b * softTokensPerImage, c);
        return Elementwise.Mul(tokens, Math.Sqrt(c));                                     // python float scalar: one rounding
    }

    private Tensor Step(string module, Func<Tensor> body)
    {
        var y = Gemma4AudioModel.Run(module, body);
        // timm's modules return [B, C, H, W]; the engine stays channels last
        if (_sink.Wants(module)) _sink.Record(module, 0, y.Permute(0, 3, 1, 2).Contiguous(), ShardSpec.Whole);
        return y;
    }
}

/// <summary>
/// A conv of the tower with its norm (timm's ConvNormAct: <c>conv</c> then <c>bn</c> = RmsNormAct2d, GELU (tanh) when
/// apply_act), or a bare conv (EdgeResidual's conv_exp/conv_pwl, whose norms are the block's bn1/bn2). create_conv2d(...,
/// padding='same'): static symmetric padding (k - 1) / 2 at stride 1, else timm's Conv2dSame, which pads each side
/// dynamically as TensorFlow's SAME does (pad_same: total = max((ceil(i / s) - 1) * s + (k - 1) + 1 - i, 0), total // 2
/// before, the rest after). create_conv2d_pad's default is bias=False: only the stem's conv has one (stem_bias=True).
/// </summary>
public sealed class MobileNetV5Conv
{
    /// <summary>What every conv of one tower shares: the matmul, and the planted padding fault.</summary>
    public sealed record Context(MatmulOptions Matmul, bool SamePadSymmetric);

    private readonly Tensor _weight;            // [out, in / groups, k, k]
    private readonly Tensor? _weightT;          // 1x1 dense convs: [in, out]
    private readonly Tensor? _norm;             // bn.weight [out], or null for a bare conv
    private readonly Tensor? _bias;             // conv.bias [out] (the stem only)
    private readonly int _kernel, _stride;
    private readonly bool _depthwise, _act;
    private readonly Context _ctx;

    public DType DType => _weight.DType;

    /// <param name="prefix">The ConvNormAct's path (its weights at prefix.conv.weight and prefix.bn.weight), or with
    /// <paramref name="normPath"/> given, the bare conv's own path (prefix.weight) and its norm's.</param>
    public MobileNetV5Conv(IWeightSource w, string prefix, int inChs, int outChs, int kernel, int stride, bool depthwise, bool act, Context ctx,
        string? convPath = null, string? normPath = null, bool bias = false)
    {
        string conv = convPath ?? $"{prefix}.conv.weight";
        if (bias)
            _bias = Gemma4TowerKernels.Expect(w.Get($"{prefix}.conv.bias"), $"{prefix}.conv.bias", [outChs], "vision_config.model_args.channel_multiplier");
        _weight = Gemma4TowerKernels.Expect(w.Get(conv), conv, [outChs, depthwise ? 1 : inChs, kernel, kernel], "vision_config.model_args.channel_multiplier");
        if (depthwise && inChs != outChs) throw new ArgumentException($"{prefix}: a depthwise conv keeps its channels ({inChs} -> {outChs})");
        string? norm = normPath ?? (convPath is null ? $"{prefix}.bn.weight" : null);
        _norm = norm is null ? null : Gemma4TowerKernels.Expect(w.Get(norm), norm, [outChs], "vision_config.model_args.channel_multiplier");
        if (kernel == 1 && stride == 1 && !depthwise) _weightT = _weight.Reshape(outChs, inChs).T();
        _kernel = kernel;
        _stride = stride;
        _depthwise = depthwise;
        _act = act;
        _ctx = ctx;
    }

    /// <param name="x">[B, H, W, in] channels last.</param>
    /// <returns>[B, Ho, Wo, out]</returns>
    public Tensor Forward(Tensor x)
    {
        var y = Conv(x);
        return _norm is null ? y : MobileNetV5Norm.RmsNormAct2d(y, _norm, _act);
    }

    /// <summary>The conv alone (no norm).</summary>
    public Tensor Conv(Tensor x)
    {
        int b = x.Size(0), h = x.Size(1), w = x.Size(2);
        int block = x.DType == DType.Float32 ? ReductionBlock : 0;
        if (_weightT is not null)                                                        // 1x1: a matmul over channels
            return TowerOps.ReduceMatmul(x.Reshape(b * h * w, x.Size(3)), _weightT, block, _ctx.Matmul)   // [B*H*W, in] x [in, out]
                .Reshape(b, h, w, _weightT.Size(1));
        var (top, bottom) = Padding(h);
        var (left, right) = Padding(w);
        if (_bias is not null)
        {   // F.conv2d(x, weight, bias): the bias joins the float32 sum before the one rounding to the dtype
            var y = TowerOps.Conv2dChannelsLast(x.To(DType.Float32), _weight.To(DType.Float32), (_stride, _stride), (top, bottom, left, right), _ctx.Matmul, ReductionBlock);
            return Elementwise.Add(y, _bias.To(DType.Float32)).To(x.DType);
        }
        return _depthwise
            ? TowerOps.DepthwiseConv2dChannelsLast(x, _weight, (_stride, _stride), (top, bottom, left, right))
            : TowerOps.Conv2dChannelsLast(x, _weight, (_stride, _stride), (top, bottom, left, right), _ctx.Matmul, block);
    }

    /// <summary>
    /// The terms one FMA chain of a dense conv's reduction sums in float32 (<see cref="TowerOps.BlockedReductionMatmul"/>):
    /// torch's conv2d (oneDNN) reduces in_channels x kernel in blocks, and one chain over the MultiQueryAttention output
    /// projection's 1536 terms was twice as far from float64 as torch (notes/issue-22-visionprec.md). bfloat16 keeps one
    /// Matmul (its one rounding to bf16 dwarfs the chain's error).
    /// </summary>
    public const int ReductionBlock = 64;

    /// <summary>
    /// get_padding_value('same', k, stride=s): is_static_pad (s == 1 and (k - 1) % 2 == 0) -> get_padding = ((s - 1) + (k - 1)) // 2
    /// on both sides; else Conv2dSame's pad_same: pad = max((ceil(i / s) - 1) * s + (k - 1) + 1 - i, 0), (pad // 2, pad - pad // 2).
    /// With the planted fault every conv takes PyTorch's symmetric get_padding, the port that forgets Conv2dSame.
    /// </summary>
    private (int Before, int After) Padding(int size) => SamePadding(size, _kernel, _stride, _ctx.SamePadSymmetric);

    /// <summary>The (before, after) padding of one spatial dim of size <paramref name="size"/> (see <see cref="Conv"/>'s rule).</summary>
    public static (int Before, int After) SamePadding(int size, int kernel, int stride, bool symmetric = false)
    {
        if (symmetric || (stride == 1 && (kernel - 1) % 2 == 0))
        {
            int p = ((stride - 1) + (kernel - 1)) / 2;
            return (p, p);
        }
        int pad = Math.Max(((size + stride - 1) / stride - 1) * stride + kernel - size, 0);
        return (pad / 2, pad - pad / 2);
    }
}

/// <summary>timm's RmsNorm2d / RmsNormAct2d on a channels-last tensor.</summary>
public static class MobileNetV5Norm
{
    /// <summary>
    /// RmsNorm2d.forward (timm.layers.fast_norm.rms_norm2d, not fast norm) over the channels, every op in the input's dtype
    /// as torch runs it (bf16 rounds after each):
    /// <code>
    /// v = x.pow(2)
    /// v = torch.mean(v, dim=1, keepdim=True)
    /// x = x * torch.rsqrt(v + eps)
    /// x = x * weight.reshape(1, -1, 1, 1)
    /// </code>
    /// then RmsNormAct2d's <c>self.act</c>: GELU(approximate='tanh') when <paramref name="act"/>, else Identity.
    /// </summary>
    public static Tensor RmsNormAct2d(Tensor x, Tensor weight, bool act, double eps = MobileNetV5Config.RmsNormEps)
    {
        var v = Reductions.Mean(Elementwise.Square(x), -1, keepDim: true);               // [B, H, W, 1]
        var y = Elementwise.Mul(Elementwise.Mul(x, Elementwise.Rsqrt(Elementwise.Add(v, eps))), weight);
        return act ? Activation.Apply(y, ActivationKind.GeluTanh) : y;                   // _GELU = partial(nn.GELU, approximate='tanh')
    }

    /// <summary>LayerScale2d.forward: <c>gamma = self.gamma.view(1, -1, 1, 1); return x * gamma</c>.</summary>
    public static Tensor LayerScale(Tensor x, Tensor gamma) => Elementwise.Mul(x, gamma);
}

/// <summary>One block of the stack.</summary>
public interface IMobileNetV5Block
{
    MobileNetV5Block Spec { get; }
    string Path { get; }
    /// <param name="x">[B, H, W, in] channels last.</param>
    Tensor Forward(Tensor x);
}

/// <summary>
/// timm's EdgeResidual (_efficientnet_blocks.py), the "er" blocks of stage 0:
/// <code>
/// shortcut = x
/// x = self.conv_exp(x)      # create_conv2d(in_chs, mid_chs, exp_kernel_size, stride, padding='same')
/// x = self.bn1(x)           # RmsNormAct2d(mid_chs): norm + GELU
/// x = self.conv_pwl(x)      # create_conv2d(mid_chs, out_chs, 1)
/// x = self.bn2(x)           # RmsNormAct2d(out_chs, apply_act=False)
/// if self.has_skip: x = self.drop_path(x) + shortcut
/// </code>
/// </summary>
public sealed class MobileNetV5EdgeResidual : IMobileNetV5Block
{
    private readonly MobileNetV5Conv _exp, _pwl;
    public MobileNetV5Block Spec { get; }
    public string Path { get; }

    public MobileNetV5EdgeResidual(IWeightSource w, string path, MobileNetV5Block b, MobileNetV5Conv.Context ctx)
    {
        Spec = b;
        Path = path;
        _exp = new MobileNetV5Conv(w, path, b.InChannels, b.MidChannels, b.KernelSize, b.Stride, depthwise: false, act: true, ctx,
            convPath: $"{path}.conv_exp.weight", normPath: $"{path}.bn1.weight");
        _pwl = new MobileNetV5Conv(w, path, b.MidChannels, b.OutChannels, 1, 1, depthwise: false, act: false, ctx,
            convPath: $"{path}.conv_pwl.weight", normPath: $"{path}.bn2.weight");
    }

    public Tensor Forward(Tensor x)
    {
        var y = _pwl.Forward(_exp.Forward(x));                                            // [B, H/s, W/s, out]
        return Spec.HasSkip ? Elementwise.Add(y, x) : y;
    }
}

/// <summary>
/// timm's UniversalInvertedResidual, the "uir" blocks (and the MSFA's ffn):
/// <code>
/// shortcut = x
/// x = self.dw_start(x)      # ConvNormAct(in, in, a, stride=stride if not k else 1, groups=in, apply_act=False), or Identity (a = 0)
/// x = self.pw_exp(x)        # ConvNormAct(in, mid, 1): norm + GELU
/// x = self.dw_mid(x)        # ConvNormAct(mid, mid, k, stride, groups=mid): norm + GELU, or Identity (k = 0)
/// x = self.se(x)            # Identity (no se in the arch_def)
/// x = self.pw_proj(x)       # ConvNormAct(mid, out, 1, apply_act=False)
/// x = self.dw_end(x)        # Identity (no 'p' kernel in the arch_def)
/// x = self.layer_scale(x)   # LayerScale2d(out, 1e-5), or Identity (the MSFA's ffn: layer_scale_init_value None)
/// if self.has_skip: x = self.drop_path(x) + shortcut
/// </code>
/// </summary>
public sealed class MobileNetV5UniversalInvertedResidual : IMobileNetV5Block
{
    private readonly MobileNetV5Conv? _dwStart, _dwMid;
    private readonly MobileNetV5Conv _pwExp, _pwProj;
    private readonly Tensor? _gamma;
    private readonly bool _skip;
    public MobileNetV5Block Spec { get; }
    public string Path { get; }

    /// <param name="dropResidual">Planted bug (a fault): the block's residual add is left out (x returned without + shortcut).</param>
    public MobileNetV5UniversalInvertedResidual(IWeightSource w, string path, MobileNetV5Block b, MobileNetV5Conv.Context ctx,
        bool layerScale, bool dropResidual = false, bool noskip = false)
    {
        Spec = b;
        Path = path;
        int mid = b.MidChannels;
        if (b.StartKernelSize > 0)
            _dwStart = new MobileNetV5Conv(w, $"{path}.dw_start", b.InChannels, b.InChannels, b.StartKernelSize,
                b.KernelSize > 0 ? 1 : b.Stride, depthwise: true, act: false, ctx);
        _pwExp = new MobileNetV5Conv(w, $"{path}.pw_exp", b.InChannels, mid, 1, 1, depthwise: false, act: true, ctx);
        if (b.KernelSize > 0)
            _dwMid = new MobileNetV5Conv(w, $"{path}.dw_mid", mid, mid, b.KernelSize, b.Stride, depthwise: true, act: true, ctx);
        else if (b.StartKernelSize == 0 && b.Stride > 1)
            throw new ArgumentException($"{path}: a strided UIR block needs a depthwise kernel");
        _pwProj = new MobileNetV5Conv(w, $"{path}.pw_proj", mid, b.OutChannels, 1, 1, depthwise: false, act: false, ctx);
        if (layerScale)
            _gamma = Gemma4TowerKernels.Expect(w.Get($"{path}.layer_scale.gamma"), $"{path}.layer_scale.gamma", [b.OutChannels],
                "vision_config.model_args.channel_multiplier");
        _skip = b.HasSkip && !noskip && !dropResidual;
    }

    public Tensor Forward(Tensor x)
    {
        var y = _dwStart?.Forward(x) ?? x;
        y = _pwExp.Forward(y);                                                           // [B, H', W', mid]
        if (_dwMid is not null) y = _dwMid.Forward(y);
        y = _pwProj.Forward(y);                                                          // [B, H', W', out]
        if (_gamma is not null) y = MobileNetV5Norm.LayerScale(y, _gamma);
        return _skip ? Elementwise.Add(y, x) : y;
    }
}

/// <summary>
/// timm's MobileAttention with use_multi_query=True, the "mqa" blocks:
/// <code>
/// shortcut = x
/// x = self.norm(x)          # RmsNormAct2d(in_chs, apply_act=False)
/// x = self.attn(x)          # MultiQueryAttention2d
/// x = self.layer_scale(x)   # LayerScale2d(out, 1e-5)
/// if self.has_skip: x = self.drop_path(x) + shortcut
/// </code>
/// MultiQueryAttention2d.forward (query_strides 1: no query down-pooling), one shared key/value head:
/// <code>
/// q = self.query(x)                                  # query.proj 1x1: [B, heads*kd, H, W]
/// q = q.reshape(B, heads, kd, -1).transpose(-1, -2)  # [B, heads, N, kd]
/// k = self.key(x)                                    # key.down_conv (dw k x k, stride kv_stride, 'same') -> key.norm -> key.proj 1x1
/// k = k.reshape(B, kd, -1).transpose(1, 2).unsqueeze(1)   # [B, 1, M, kd]
/// v = likewise with self.value                       # [B, 1, M, vd]
/// o = F.scaled_dot_product_attention(q, k, v)        # fused_attn (timm's default): scale kd^-0.5
/// o = o.transpose(1, 2).reshape(B, H, W, heads*vd).permute(0, 3, 1, 2)
/// x = self.output(o)                                 # output.proj 1x1 -> out
/// </code>
/// The attention is the engine's one (<see cref="AttentionCore.SdpaKeyPadding"/>, sdpa's CPU numerics, no key padding).
/// </summary>
public sealed class MobileNetV5MobileAttention : IMobileNetV5Block
{
    private readonly Tensor _norm, _gamma;
    private readonly MobileNetV5Conv _query, _keyProj, _valueProj, _output;
    private readonly MobileNetV5Conv? _keyDown, _valueDown;
    private readonly Tensor? _keyNorm, _valueNorm;
    private readonly AttentionCore _attention;
    private readonly MobileNetV5Conv.Context _ctx;
    private readonly IActivationSink _sink;
    public MobileNetV5Block Spec { get; }
    public string Path { get; }

    public MobileNetV5MobileAttention(IWeightSource w, string path, MobileNetV5Block b, MobileNetV5Conv.Context ctx, IActivationSink sink)
    {
        Spec = b;
        Path = path;
        _ctx = ctx;
        _sink = sink;
        const string field = "vision_config.model_args.channel_multiplier";
        int c = b.InChannels;
        if (b.Stride != 1) throw new ArgumentException($"{path}: MobileAttention with stride {b.Stride} (query strides) is not in {MobileNetV5Config.Architecture}");
        _norm = Gemma4TowerKernels.Expect(w.Get($"{path}.norm.weight"), $"{path}.norm.weight", [c], field);
        string a = $"{path}.attn";
        _query = new MobileNetV5Conv(w, $"{a}.query.proj", c, b.Heads * b.KeyDim, 1, 1, false, false, ctx, convPath: $"{a}.query.proj.weight");
        if (b.KvStride > 1)
        {
            _keyDown = new MobileNetV5Conv(w, $"{a}.key.down_conv", c, c, b.KernelSize, b.KvStride, true, false, ctx, convPath: $"{a}.key.down_conv.weight");
            _keyNorm = Gemma4TowerKernels.Expect(w.Get($"{a}.key.norm.weight"), $"{a}.key.norm.weight", [c], field);
            _valueDown = new MobileNetV5Conv(w, $"{a}.value.down_conv", c, c, b.KernelSize, b.KvStride, true, false, ctx, convPath: $"{a}.value.down_conv.weight");
            _valueNorm = Gemma4TowerKernels.Expect(w.Get($"{a}.value.norm.weight"), $"{a}.value.norm.weight", [c], field);
        }
        _keyProj = new MobileNetV5Conv(w, $"{a}.key.proj", c, b.KeyDim, 1, 1, false, false, ctx, convPath: $"{a}.key.proj.weight");
        _valueProj = new MobileNetV5Conv(w, $"{a}.value.proj", c, b.ValueDim, 1, 1, false, false, ctx, convPath: $"{a}.value.proj.weight");
        _output = new MobileNetV5Conv(w, $"{a}.output.proj", b.Heads * b.ValueDim, b.OutChannels, 1, 1, false, false, ctx, convPath: $"{a}.output.proj.weight");
        _gamma = Gemma4TowerKernels.Expect(w.Get($"{path}.layer_scale.gamma"), $"{path}.layer_scale.gamma", [b.OutChannels], field);
        // self.scale = self.key_dim ** -0.5 (sdpa's default scale for q's last dim kd)
        _attention = new AttentionCore(new AttentionSpec(b.Heads, 1, b.KeyDim, Math.Pow(b.KeyDim, -0.5)) { Mask = AttentionMask.None });
    }

    public Tensor Forward(Tensor x)
    {
        var h = MobileNetV5Norm.RmsNormAct2d(x, _norm, act: false);
        string attnPath = $"{Path}.attn";
        var y = Gemma4AudioModel.Run(attnPath, () => Attention(h));                      // [B, H, W, out]
        if (_sink.Wants(attnPath)) _sink.Record(attnPath, 0, y.Permute(0, 3, 1, 2).Contiguous(), ShardSpec.Whole);
        y = MobileNetV5Norm.LayerScale(y, _gamma);
        return Spec.HasSkip ? Elementwise.Add(y, x) : y;
    }

    private Tensor Attention(Tensor x)
    {
        int b = x.Size(0), hh = x.Size(1), ww = x.Size(2), n = hh * ww, heads = Spec.Heads, kd = Spec.KeyDim, vd = Spec.ValueDim;
        var q = _query.Conv(x).Reshape(b, n, heads, kd).Transpose(1, 2);                 // [B, heads, N, kd]
        var k = KeyValue(x, _keyDown, _keyNorm, _keyProj);                               // [B, Hk, Wk, kd]
        var v = KeyValue(x, _valueDown, _valueNorm, _valueProj);                         // [B, Hk, Wk, vd]
        int m = k.Size(1) * k.Size(2);
        var k4 = k.Reshape(b, 1, m, kd);                                                 // [B, 1, M, kd]
        var v4 = v.Reshape(b, 1, m, vd);
        var noPadding = Tensor.FromArray(new bool[b * m], b, 1, 1, m);
        var o = _attention.SdpaKeyPadding(q, k4, v4, noPadding, _ctx.Matmul).To(x.DType);   // [B, heads, N, vd]
        o = o.Transpose(1, 2).Contiguous().Reshape(b, hh, ww, heads * vd);               // o.transpose(1, 2).reshape(b, h, w, heads * vd)
        return _output.Conv(o);                                                           // [B, H, W, out]
    }

    private static Tensor KeyValue(Tensor x, MobileNetV5Conv? down, Tensor? norm, MobileNetV5Conv proj)
    {
        if (down is not null) x = MobileNetV5Norm.RmsNormAct2d(down.Conv(x), norm!, act: false);   // down_conv -> norm
        return proj.Conv(x);
    }
}

/// <summary>
/// timm's MobileNetV5MultiScaleFusionAdapter (the msfa neck):
/// <code>
/// high_resolution = inputs[0].shape[-2:]
/// for img in inputs: if smaller: img = F.interpolate(img, size=high_resolution, mode="nearest")
/// channel_cat_imgs = torch.cat(resized_inputs, dim=1)
/// img = self.ffn(channel_cat_imgs)          # UIR(in_chs, 2048, dw_kernel_size_mid=0, exp_ratio=2.0, noskip=True), no layer scale
/// if high_resolution != self.output_resolution:
///     if not divisible: img = F.interpolate(img, size=self.output_resolution, mode="bilinear")
///     else: img = F.avg_pool2d(img, kernel_size=(h_strides, w_strides), stride=(h_strides, w_strides))
/// img = self.norm(img)                      # RmsNorm2d(2048)
/// </code>
/// The bilinear branch (a feature map that is no multiple of msfa_output_resolution) is not ported: one line naming both.
/// </summary>
public sealed class MobileNetV5Msfa
{
    private readonly MobileNetV5UniversalInvertedResidual _ffn;
    private readonly Tensor _norm;
    private readonly int _resolution;
    private readonly string _path;

    public MobileNetV5Msfa(IWeightSource w, string path, MobileNetV5Config c, MobileNetV5Conv.Context ctx)
    {
        _path = path;
        var spec = new MobileNetV5Block(MobileNetV5BlockType.UniversalInvertedResidual, -1, -1, c.MsfaInChannels, MobileNetV5Config.NumFeatures,
            1, 0, 0, MobileNetV5Config.MsfaExpansionRatio, 0, 0, 0, 1);
        _ffn = new MobileNetV5UniversalInvertedResidual(w, $"{path}.ffn", spec, ctx, layerScale: false, noskip: true);
        _norm = Gemma4TowerKernels.Expect(w.Get($"{path}.norm.weight"), $"{path}.norm.weight", [MobileNetV5Config.NumFeatures], "vision_config.hidden_size");
        _resolution = c.MsfaOutputResolution;
    }

    /// <param name="inputs">The fused stages' outputs, highest resolution first, each [B, Hi, Wi, Ci].</param>
    /// <returns>[B, R, R, 2048]</returns>
    public Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        int hh = inputs[0].Size(1), ww = inputs[0].Size(2);
        var resized = inputs.Select(img => img.Size(1) < hh || img.Size(2) < ww ? TowerOps.InterpolateNearestChannelsLast(img, hh, ww) : img).ToArray();
        var cat = Tensor.Cat(resized, 3);                                                // [B, H, W, sum Ci]
        var y = _ffn.Forward(cat);                                                       // [B, H, W, 2048]
        if (hh != _resolution || ww != _resolution)
        {
            if (hh % _resolution != 0 || ww % _resolution != 0)
                throw new NotSupportedException($"{_path}: a {hh}x{ww} feature map is no multiple of msfa_output_resolution {_resolution}: timm resizes it bilinearly, which the engine does not port (give an image whose size / 16 is a multiple of it)");
            y = TowerOps.AvgPoolChannelsLast(y, hh / _resolution, ww / _resolution);     // [B, R, R, 2048]
        }
        return MobileNetV5Norm.RmsNormAct2d(y, _norm, act: false);
    }
}
