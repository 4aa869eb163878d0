using Harness.Engine.Attention;
using Harness.Engine.Capture;
using Harness.Engine.Models.Gemma4.Audio;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4.Vision;

/// <summary>
/// Gemma4VisionModel (HF modeling_gemma4.py 2010-2075), a ViT over already patchified pixels: [B, N, 3*p*p] with (x, y)
/// patch positions [B, N, 2] ((-1, -1) = padding) to soft tokens [tokens, hidden], padding stripped across the batch.
/// <code>
/// pad = (pos == -1).all(-1)
/// h = patch_embedder: input_proj(2 * (px - 0.5)) + where(pad, 0, table[0][x] + table[1][y])
/// cos, sin = 2-D RoPE: [cos(x * inv) | cos(y * inv)], inv over head_dim/2        (Gemma4VisionRotaryEmbedding)
/// for layer: h = h + post_attn_norm(attn(input_norm(h))); h = h + post_ffw_norm(mlp(pre_ffw_norm(h)))
///   attn: q/k normed (scale), v normed (no scale), RoPE inside each half [x-half | y-half], scaling 1.0, keys masked by pad
/// pooled, valid = pooler(h): zero padding, k x k average by position (one-hot matrix @ h in float32), * sqrt(hidden)
/// out = pooled[valid]; if standardize: (out - std_bias) * std_scale; cast to the model dtype
/// </code>
/// Attention follows sdpa's semantics (float32 scores and softmax from the dtype's q, k, v; the output rounded once); every
/// product goes through <see cref="Matmul"/> with the constructor's <see cref="MatmulOptions"/>. Records HF's module paths.
/// </summary>
public sealed class Gemma4VisionModel
{
    public const string DefaultPrefix = "model.vision_tower";

    private readonly Gemma4VisionConfig _c;
    private readonly IActivationSink _sink;
    private readonly MatmulOptions _matmul;
    private readonly Tensor _inputProjT, _positionTable;
    private readonly Tensor? _stdBias, _stdScale;
    private readonly Gemma4VisionLayer[] _layers;
    private readonly Tensor _invFreq;

    public string Prefix { get; }
    public Gemma4VisionConfig Config => _c;

    /// <param name="weights">The checkpoint (HF names, e.g. "model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight").</param>
    /// <param name="config">The vision_config.</param>
    /// <param name="sink">Where module outputs are recorded (HF module paths); null records nothing.</param>
    /// <param name="matmul">The matmul every product runs on (<see cref="MatmulOptions.Default"/>: torch.matmul's shape rules).</param>
    /// <param name="prefix">The tower's module path in the checkpoint.</param>
    public Gemma4VisionModel(IWeightSource weights, Gemma4VisionConfig config, IActivationSink? sink = null, MatmulOptions? matmul = null,
        string prefix = DefaultPrefix)
    {
        _c = config;
        _sink = sink ?? NoCapture.Instance;
        _matmul = matmul ?? MatmulOptions.Default;
        Prefix = prefix;
        _inputProjT = Gemma4TowerKernels.Expect(weights.Get($"{prefix}.patch_embedder.input_proj.weight"), $"{prefix}.patch_embedder.input_proj.weight",
            [config.HiddenSize, 3 * config.PatchSize * config.PatchSize], "vision_config.hidden_size, 3 * patch_size^2").T();
        _positionTable = Gemma4TowerKernels.Expect(weights.Get($"{prefix}.patch_embedder.position_embedding_table"),
            $"{prefix}.patch_embedder.position_embedding_table", [2, config.PositionEmbeddingSize, config.HiddenSize],
            "vision_config.position_embedding_size, hidden_size");                                   // [2, P, hidden]
        if (config.Standardize)
        {
            _stdBias = weights.Get($"{prefix}.std_bias");
            _stdScale = weights.Get($"{prefix}.std_scale");
        }
        _layers = Enumerable.Range(0, config.NumHiddenLayers)
            .Select(i => new Gemma4VisionLayer(weights, $"{prefix}.encoder.layers.{i}", config, _matmul)).ToArray();
        // inv_freq = 1 / theta ** (arange(0, spatial_dim, 2) / spatial_dim), spatial_dim = head_dim // 2
        _invFreq = Rotary.InvFreq(config.RopeTheta, config.HeadDim / 2);
    }

    /// <summary>The tower's output.</summary>
    /// <param name="SoftTokens">[tokens, hidden] in the model dtype: every image's valid pooled tokens, image after image.</param>
    /// <param name="TokensPerImage">How many of them each image contributed.</param>
    public sealed record Output(Tensor SoftTokens, int[] TokensPerImage);

    /// <summary>Encodes patchified images to soft tokens.</summary>
    /// <param name="pixelValues">[B, N, 3*patch_size^2] in [0, 1], the model dtype; N must be a multiple of pooling_kernel_size^2.</param>
    /// <param name="positions">[B, N, 2] int64 (x, y) patch positions; (-1, -1) marks a padding patch.</param>
    public Output Forward(Tensor pixelValues, Tensor positions)
    {
        if (pixelValues.Rank != 3) throw new ArgumentException($"{Prefix}: pixel_values must be [batch, patches, 3*patch_size^2], got {Shape.Format(pixelValues.Shape)}");
        int b = pixelValues.Size(0), n = pixelValues.Size(1), kk = _c.PoolingKernelSize;
        if (pixelValues.Size(2) != 3 * _c.PatchSize * _c.PatchSize)
            throw new ArgumentException($"{Prefix}: pixel_values {Shape.Format(pixelValues.Shape)} must hold 3 * patch_size^2 = {3 * _c.PatchSize * _c.PatchSize} values per patch (vision_config.patch_size {_c.PatchSize})");
        if (positions.Rank != 3 || positions.Size(0) != b || positions.Size(1) != n || positions.Size(2) != 2)
            throw new ArgumentException($"{Prefix}: pixel_position_ids {Shape.Format(positions.Shape)} must be [{b}, {n}, 2] for pixel_values {Shape.Format(pixelValues.Shape)}");
        var pos = positions.ToInt64Array();
        var pad = new bool[b * n];
        for (int i = 0; i < b * n; i++) pad[i] = pos[2 * i] == -1 && pos[2 * i + 1] == -1;
        int outputLength = n / (kk * kk);

        var h = Gemma4AudioModel.Run($"{Prefix}.patch_embedder", () => PatchEmbed(pixelValues, pos, pad, b, n));
        Record($"{Prefix}.patch_embedder", h);

        // position_embeddings = self.rotary_emb(hidden_states, pixel_position_ids): [B, N, head_dim] cos and sin
        var (cos, sin) = Rope(positions, h.DType);
        var padMask = Tensor.FromArray(pad, b, 1, 1, n);                                       // [B, 1, 1, N] key is padding
        foreach (var layer in _layers) h = layer.Forward(h, cos, sin, padMask, _sink);

        var (pooled, valid) = Gemma4AudioModel.Run($"{Prefix}.pooler", () => Pool(h, pos, pad, b, n, outputLength));
        Record($"{Prefix}.pooler", pooled);

        var output = Gemma4AudioModel.Run(Prefix, () => Strip(pooled, valid, h.DType));
        Record(Prefix, output.SoftTokens);
        return output;
    }

    // Gemma4VisionPatchEmbedder.forward
    private Tensor PatchEmbed(Tensor pixels, long[] pos, bool[] pad, int b, int n)
    {
        // pixel_values = 2 * (pixel_values - 0.5); hidden_states = self.input_proj(pixel_values)
        var px = Elementwise.Mul(Elementwise.Sub(pixels, 0.5), 2.0);
        var h = Matmul.Forward(px, _inputProjT, _matmul);                                       // [B, N, hidden]
        // x_emb + y_emb from the [2, P, hidden] table at clamp(pos, min=0); zero at padding
        var xs = Tensor.FromArray(Enumerable.Range(0, b * n).Select(i => Math.Max(pos[2 * i], 0)).ToArray(), b, n);
        var ys = Tensor.FromArray(Enumerable.Range(0, b * n).Select(i => Math.Max(pos[2 * i + 1], 0)).ToArray(), b, n);
        var pe = Elementwise.Add(Embedding.Lookup(_positionTable.Select(0, 0), xs), Embedding.Lookup(_positionTable.Select(0, 1), ys));
        pe = Elementwise.Where(Tensor.FromArray(pad, b, n, 1), Tensor.Zeros(pe.DType, 1), pe);
        return Elementwise.Add(h, pe);
    }

    /// <summary>
    /// Gemma4VisionRotaryEmbedding: per axis i (x, y), freqs = inv_freq * pos_i (float32), emb = cat(freqs, freqs); cos/sin of
    /// the two axes concatenated: [B, N, head_dim] in the model dtype. Padding positions (-1) are used as they are, as HF does.
    /// </summary>
    private (Tensor Cos, Tensor Sin) Rope(Tensor positions, DType dtype)
    {
        var (cx, sx) = Rotary.CosSin(_invFreq, positions.Select(2, 0), DType.Float32);
        var (cy, sy) = Rotary.CosSin(_invFreq, positions.Select(2, 1), DType.Float32);
        return (Tensor.Cat([cx, cy], -1).To(dtype), Tensor.Cat([sx, sy], -1).To(dtype));
    }

    // Gemma4VisionPooler.forward: masked_fill(padding, 0); _avg_pool_by_positions when N != output_length; * sqrt(hidden) in float32.
    private (Tensor, bool[]) Pool(Tensor h, long[] pos, bool[] pad, int b, int n, int length)
    {
        h = Elementwise.Where(Tensor.FromArray(pad, b, n, 1), Tensor.Zeros(h.DType, 1), h);
        var valid = new bool[b * length];
        Tensor pooled;
        if (n != length)
        {
            int k = (int)Math.Sqrt(n / length);
            if (k * k * length != n)
                throw new ArgumentException($"Cannot pool {Shape.Format(h.Shape)} to {length}: k={k}^2 times length={length} must be {n}.");
            var weights = new float[b * length * n];                                             // weights^T: [B, length, N]
            for (int bi = 0; bi < b; bi++)
            {
                long maxX = 0;
                for (int i = 0; i < n; i++) maxX = Math.Max(maxX, Math.Max(pos[2 * (bi * n + i)], 0));
                maxX += 1;
                for (int i = 0; i < n; i++)
                {
                    long x = Math.Max(pos[2 * (bi * n + i)], 0), y = Math.Max(pos[2 * (bi * n + i) + 1], 0);
                    long idx = x / k + maxX / k * (y / k);
                    if (idx >= length) throw new ArgumentException($"{Prefix}.pooler: patch ({x}, {y}) of image {bi} falls in pooled token {idx}, beyond the {length} pooled tokens");
                    weights[(bi * length + idx) * n + i] = 1f / (k * k);
                    valid[bi * length + idx] = true;
                }
            }
            // output = weights.transpose(1, 2) @ hidden_states.float()
            pooled = Matmul.Forward(Tensor.FromArray(weights, b, length, n), h.To(DType.Float32), _matmul).To(h.DType);
        }
        else
        {
            pooled = h;
            for (int i = 0; i < b * n; i++) valid[i] = !pad[i];
        }
        // hidden_states.float() * self.root_hidden_size
        return (Elementwise.Mul(pooled.To(DType.Float32), Math.Sqrt(_c.HiddenSize)), valid);
    }

    // hidden_states[pooler_mask]; standardize in float32; cast to the working dtype.
    private Output Strip(Tensor pooled, bool[] valid, DType dtype)
    {
        int b = pooled.Size(0), length = pooled.Size(1);
        var rows = new List<Tensor>();
        var perImage = new int[b];
        for (int i = 0; i < b * length; i++)
            if (valid[i]) { rows.Add(pooled.Select(0, i / length).Select(0, i % length).Unsqueeze(0)); perImage[i / length]++; }
        var h = rows.Count == 0 ? Tensor.Zeros(DType.Float32, 0, _c.HiddenSize) : Tensor.Cat(rows, 0);   // [tokens, hidden]
        if (_stdBias is not null)
            h = Elementwise.Mul(Elementwise.Sub(h, _stdBias.To(DType.Float32)), _stdScale!.To(DType.Float32));
        return new Output(h.To(dtype), perImage);
    }

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, 0, value, ShardSpec.Whole);
    }
}

/// <summary>
/// Gemma4VisionEncoderLayer (HF 985-1021) with Gemma4VisionAttention (911-983) and Gemma4VisionMLP (685-698), all linears
/// clippable:
/// <code>
/// h = h + post_attention_layernorm(self_attn(input_layernorm(h)))
/// h = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))          # mlp = down(act(gate(x)) * up(x))
/// </code>
/// </summary>
public sealed class Gemma4VisionLayer
{
    private readonly Gemma4VisionConfig _c;
    private readonly Gemma4ClippableLinear _q, _k, _v, _o, _gate, _up, _down;
    private readonly Tensor _qNorm, _kNorm, _inputNorm, _postAttnNorm, _preFfwNorm, _postFfwNorm;
    private readonly MatmulOptions _matmul;
    private readonly ActivationKind _act;
    private readonly AttentionCore _attention;

    public string Prefix { get; }

    public Gemma4VisionLayer(IWeightSource w, string prefix, Gemma4VisionConfig c, MatmulOptions matmul)
    {
        Prefix = prefix;
        _c = c;
        _matmul = matmul;
        string a = $"{prefix}.self_attn", m = $"{prefix}.mlp";
        _q = new Gemma4ClippableLinear(w, $"{a}.q_proj", c.UseClippedLinears, matmul);
        _k = new Gemma4ClippableLinear(w, $"{a}.k_proj", c.UseClippedLinears, matmul);
        _v = new Gemma4ClippableLinear(w, $"{a}.v_proj", c.UseClippedLinears, matmul);
        _o = new Gemma4ClippableLinear(w, $"{a}.o_proj", c.UseClippedLinears, matmul);
        _qNorm = w.Get($"{a}.q_norm.weight");
        _kNorm = w.Get($"{a}.k_norm.weight");
        _gate = new Gemma4ClippableLinear(w, $"{m}.gate_proj", c.UseClippedLinears, matmul);
        if (_gate.OutFeatures != c.IntermediateSize)
            throw new ArgumentException($"{m}.gate_proj.linear.weight has {_gate.OutFeatures} outputs but vision_config.intermediate_size is {c.IntermediateSize}");
        _up = new Gemma4ClippableLinear(w, $"{m}.up_proj", c.UseClippedLinears, matmul);
        _down = new Gemma4ClippableLinear(w, $"{m}.down_proj", c.UseClippedLinears, matmul);
        _inputNorm = w.Get($"{prefix}.input_layernorm.weight");
        _postAttnNorm = w.Get($"{prefix}.post_attention_layernorm.weight");
        _preFfwNorm = w.Get($"{prefix}.pre_feedforward_layernorm.weight");
        _postFfwNorm = w.Get($"{prefix}.post_feedforward_layernorm.weight");
        _act = Activation.Parse(c.HiddenActivation);
        _attention = new AttentionCore(new AttentionSpec(c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, 1.0) { Mask = AttentionMask.None });
    }

    /// <param name="h">[B, N, hidden].</param>
    /// <param name="cos">[B, N, head_dim] (x half | y half).</param>
    /// <param name="sin">[B, N, head_dim].</param>
    /// <param name="padMask">[B, 1, 1, N] bool, true where the key is a padding patch.</param>
    public Tensor Forward(Tensor h, Tensor cos, Tensor sin, Tensor padMask, IActivationSink sink)
    {
        var attn = Step(sink, $"{Prefix}.self_attn", () => Attention(Norm(h, _inputNorm), cos, sin, padMask));
        h = Elementwise.Add(h, Norm(attn, _postAttnNorm));
        var mlp = Step(sink, $"{Prefix}.mlp", () => _down.Forward(Activation.ApplyGated(_gate.Forward(Norm(h, _preFfwNorm)), _up.Forward(Norm(h, _preFfwNorm)), _act)));
        h = Elementwise.Add(h, Norm(mlp, _postFfwNorm));
        if (sink.Wants(Prefix)) sink.Record(Prefix, 0, h, ShardSpec.Whole);
        return h;
    }

    private Tensor Norm(Tensor x, Tensor weight) => Norms.RmsNorm(x, weight, _c.RmsNormEps, RmsNormKind.GemmaScaled);

    private Tensor Attention(Tensor x, Tensor cos, Tensor sin, Tensor padMask)
    {
        int b = x.Size(0), n = x.Size(1), hd = _c.HeadDim, heads = _c.NumAttentionHeads, kv = _c.NumKeyValueHeads;
        // q = apply_multidimensional_rope(q_norm(q_proj(x).view(B, N, heads, hd)), cos, sin)
        var q = MultidimensionalRope(Norms.RmsNorm(_q.Forward(x).Reshape(b, n, heads, hd), _qNorm, _c.RmsNormEps, RmsNormKind.GemmaScaled), cos, sin);
        var k = MultidimensionalRope(Norms.RmsNorm(_k.Forward(x).Reshape(b, n, kv, hd), _kNorm, _c.RmsNormEps, RmsNormKind.GemmaScaled), cos, sin);
        var v = Norms.RmsNorm(_v.Forward(x).Reshape(b, n, kv, hd), null, _c.RmsNormEps, RmsNormKind.GemmaNoScale);

        // sdpa(q, k, v, mask, scale=1.0) with repeat_kv, as torch's CPU flash-attention kernel computes it (the one attention's sdpa numerics)
        var o = _attention.SdpaKeyPadding(q.Permute(0, 2, 1, 3), k.Permute(0, 2, 1, 3), v.Permute(0, 2, 1, 3), padMask, _matmul); // [B, heads, N, hd] float32
        // attn_output.reshape(*input_shape, -1) -> o_proj
        return _o.Forward(o.Permute(0, 2, 1, 3).Reshape(b, n, heads * hd).To(x.DType));
    }

    /// <summary>
    /// apply_multidimensional_rope with 2 axes: the head vector splits into [x-half | y-half] and standard rotate_half RoPE runs
    /// inside each half with the matching half of cos/sin (unsqueezed at dim 2 over the heads). [B, N, heads, hd].
    /// </summary>
    private static Tensor MultidimensionalRope(Tensor x, Tensor cos, Tensor sin)
    {
        int half = x.Size(-1) / 2;
        var parts = new Tensor[2];
        for (int i = 0; i < 2; i++)
            parts[i] = Rotary.Apply(x.Narrow(-1, i * half, half), cos.Narrow(-1, i * half, half), sin.Narrow(-1, i * half, half), unsqueezeDim: 2);
        return Tensor.Cat(parts, -1);
    }

    private static Tensor Step(IActivationSink sink, string module, Func<Tensor> body)
    {
        var y = Gemma4AudioModel.Run(module, body);
        if (sink.Wants(module)) sink.Record(module, 0, y, ShardSpec.Whole);
        return y;
    }
}
