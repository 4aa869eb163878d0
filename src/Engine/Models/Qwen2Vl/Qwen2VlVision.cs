using Harness.Engine.Capture;
using Harness.Engine.Attention;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Qwen2Vl;

/// <summary>
/// Qwen2VisionTransformerPretrainedModel (model.visual) on one TP rank, sharded as vLLM's Qwen2VisionTransformer:
/// patch_embed replicated; per block norm1/norm2 replicated, attn.qkv column-parallel by heads (each of q, k, v split
/// over heads, which is what vLLM's ColumnParallelLinear + split_qkv leaves on a rank), attn.proj row-parallel, mlp.fc1
/// column-parallel, mlp.fc2 row-parallel; merger.ln_q replicated, merger.mlp.0 column-parallel, merger.mlp.2 row-parallel.
/// Input pixel_values [patches, C*T*p*p] (the processor's layout) and the grids; output the merged features
/// [patches/m^2, text hidden].
/// </summary>
public sealed class Qwen2VlVisionTower
{
    private const double LayerNormEps = 1e-6;
    private const string Prefix = "model.visual";
    private readonly Qwen2VlConfig _config;
    private readonly ParallelContext _ctx;
    private readonly IActivationSink _sink;
    private readonly Linear _patchEmbed;
    private readonly VisionBlock[] _blocks;
    private readonly Tensor _lnQWeight, _lnQBias;
    private readonly ColumnParallelLinear _mergerFc1;
    private readonly RowParallelLinear _mergerFc2;

    public DType DType { get; }

    public Qwen2VlVisionTower(IWeightSource weights, Qwen2VlConfig config, ParallelContext ctx, IActivationSink sink)
    {
        _config = config;
        _ctx = ctx;
        _sink = sink;
        // nn.Conv3d(C, E, kernel=stride=(T, p, p), bias=False) on one patch is a dot product with the flattened kernel.
        var conv = weights.Get(Prefix + ".patch_embed.proj.weight");           // [E, C, T, p, p]
        if (conv.Rank != 5 || conv.NumEl != config.VisionEmbedDim * config.PatchVolume)
            throw new ArgumentException($"{Prefix}.patch_embed.proj.weight is {Shape.Format(conv.Shape)}, expected " +
                $"[{config.VisionEmbedDim}, {config.InChannels}, {config.TemporalPatchSize}, {config.PatchSize}, {config.PatchSize}]");
        _patchEmbed = new Linear(conv.Reshape(config.VisionEmbedDim, config.PatchVolume));
        DType = conv.DType;
        _blocks = Enumerable.Range(0, config.VisionDepth)
            .Select(i => new VisionBlock(weights, $"{Prefix}.blocks.{i}", config, ctx)).ToArray();
        _lnQWeight = weights.Get(Prefix + ".merger.ln_q.weight");
        _lnQBias = weights.Get(Prefix + ".merger.ln_q.bias");
        _mergerFc1 = ColumnParallelLinear.Load(weights, Prefix + ".merger.mlp.0", ctx.Tp);
        _mergerFc2 = RowParallelLinear.Load(weights, Prefix + ".merger.mlp.2", ctx.Tp, inputIsParallel: true);
    }

    /// <param name="pixels">[patches, C*T*p*p], any float dtype (cast to the tower's dtype as HF does).</param>
    /// <returns>[patches / m^2, hidden]: the features that replace the image/video placeholder tokens, in grid order.</returns>
    public Tensor Forward(Tensor pixels, IReadOnlyList<GridThw> grids)
    {
        int patches = grids.Sum(g => g.Patches);
        if (pixels.Rank != 2 || pixels.Shape[0] != patches || pixels.Shape[1] != _config.PatchVolume)
            throw new ArgumentException($"pixel values are {Shape.Format(pixels.Shape)}, but the grids [{string.Join(", ", grids)}] " +
                                        $"need [{patches}, {_config.PatchVolume}]");
        var (rows, cols) = Qwen2VlRope.VisionPositions(grids, _config.SpatialMergeSize);
        var (cos, sin) = Qwen2VlRope.VisionCosSin(rows, cols, _config.VisionHeadDim);  // [patches, head_dim] float32
        var segments = Qwen2VlRope.FrameSegments(grids);                              // cu_seqlens: one per frame

        // hidden_states = self.patch_embed(hidden_states)
        var h = Run("patch_embed", () => _patchEmbed.Forward(pixels.To(DType)));    // [patches, E]
        Record(Prefix + ".patch_embed", h);
        foreach (var block in _blocks)
            h = Run(block.Prefix, () => block.Forward(h, cos, sin, segments, Record));
        // merged_hidden_states = self.merger(hidden_states)
        var merged = Run("merger", () =>
        {
            int m2 = _config.SpatialMergeSize * _config.SpatialMergeSize;
            var x = Norms.LayerNorm(h, _lnQWeight, _lnQBias, LayerNormEps)
                .Reshape(-1, m2 * _config.VisionEmbedDim);                              // [patches/m^2, m^2*E]: one merge block a row
            x = Activation.Apply(_mergerFc1.Forward(x), ActivationKind.Gelu);           // [patches/m^2, m^2*E/tp], nn.GELU() exact
            return _mergerFc2.Forward(x);                                               // [patches/m^2, hidden]
        });
        Record(Prefix + ".merger", merged);
        return merged;
    }

    private Tensor Run(string module, Func<Tensor> body)
    {
        try { return body(); }
        catch (Exception e) when (e is not ModuleFailedException and not CollectiveException { Failure: CollectiveFailure.PeerFailed })
        {
            throw new ModuleFailedException(module.StartsWith(Prefix, StringComparison.Ordinal) ? module : $"{Prefix}.{module}", _ctx.WorldRank, e);
        }
    }

    private void Record(string module, Tensor value)
    {
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value, ShardSpec.Whole);
    }

    /// <summary>Qwen2VLVisionBlock: x + attn(norm1(x)), then x + mlp(norm2(x)); LayerNorm with bias, eps 1e-6.</summary>
    private sealed class VisionBlock
    {
        private readonly Tensor _n1w, _n1b, _n2w, _n2b;
        private readonly Linear _q, _k, _v;
        private readonly RowParallelLinear _proj;
        private readonly ColumnParallelLinear _fc1;
        private readonly RowParallelLinear _fc2;
        private readonly ActivationKind _act;
        private readonly int _localHeads, _headDim;
        private readonly AttentionCore _attention;

        public string Prefix { get; }

        public VisionBlock(IWeightSource weights, string prefix, Qwen2VlConfig config, ParallelContext ctx)
        {
            Prefix = prefix;
            _n1w = weights.Get(prefix + ".norm1.weight"); _n1b = weights.Get(prefix + ".norm1.bias");
            _n2w = weights.Get(prefix + ".norm2.weight"); _n2b = weights.Get(prefix + ".norm2.bias");
            int tp = ctx.TpSize, e = config.VisionEmbedDim;
            if (config.VisionHeads % tp != 0)
                throw new ArgumentException($"{prefix}.attn: {config.VisionHeads} vision heads are not divisible by the tensor-parallel size {tp}");
            _headDim = config.VisionHeadDim;
            _localHeads = config.VisionHeads / tp;
            _attention = new AttentionCore(new AttentionSpec(_localHeads, _localHeads, _headDim, Math.Pow(_headDim, -0.5)) { Mask = AttentionMask.None });
            // qkv.weight [3E, E] = [q; k; v], each head-major: this rank's heads of each.
            var w = weights.Get(prefix + ".attn.qkv.weight");
            var b = weights.Get(prefix + ".attn.qkv.bias");
            int rows = _localHeads * _headDim, start = ctx.TpRank * rows;
            Linear Part(int which) => new(w.Narrow(0, which * e + start, rows), b.Narrow(0, which * e + start, rows));
            (_q, _k, _v) = (Part(0), Part(1), Part(2));
            _proj = RowParallelLinear.Load(weights, prefix + ".attn.proj", ctx.Tp, inputIsParallel: true);
            _fc1 = ColumnParallelLinear.Load(weights, prefix + ".mlp.fc1", ctx.Tp);
            _fc2 = RowParallelLinear.Load(weights, prefix + ".mlp.fc2", ctx.Tp, inputIsParallel: true);
            _act = Activation.Parse(config.VisionHiddenAct);
        }

        public Tensor Forward(Tensor x, Tensor cos, Tensor sin, IReadOnlyList<(int Start, int Length)> segments, Action<string, Tensor> record)
        {
            // hidden_states = hidden_states + self.attn(self.norm1(hidden_states), cu_seqlens, position_embeddings)
            var attn = Attention(Norms.LayerNorm(x, _n1w, _n1b, LayerNormEps), cos, sin, segments);
            record(Prefix + ".attn", attn);
            x = Elementwise.Add(x, attn);
            // hidden_states = hidden_states + self.mlp(self.norm2(hidden_states)): fc2(quick_gelu(fc1(x)))
            var mlp = _fc2.Forward(Activation.Apply(_fc1.Forward(Norms.LayerNorm(x, _n2w, _n2b, LayerNormEps)), _act));
            record(Prefix + ".mlp", mlp);
            x = Elementwise.Add(x, mlp);
            record(Prefix, x);
            return x;
        }

        /// <summary>VisionAttention: non-causal attention inside each frame's segment, 2D rotary in float32.</summary>
        private Tensor Attention(Tensor x, Tensor cos, Tensor sin, IReadOnlyList<(int Start, int Length)> segments)
        {
            int n = x.Shape[0], heads = _localHeads, hd = _headDim;
            var dtype = x.DType;
            // q, k, v = qkv(x).reshape(seq, 3, heads, -1).permute(1, 0, 2, 3).unbind(0): this rank's heads
            var q = _q.Forward(x).View(n, heads, hd);                            // [n, heads/tp, hd]
            var k = _k.Forward(x).View(n, heads, hd);
            var v = _v.Forward(x).View(n, heads, hd);
            // apply_rotary_pos_emb_vision: q.float() * cos.unsqueeze(-2) + rotate_half(q.float()) * sin, then .to(q.dtype)
            q = Rotary.Apply(q.To(DType.Float32), cos, sin, unsqueezeDim: 1).To(dtype);
            k = Rotary.Apply(k.To(DType.Float32), cos, sin, unsqueezeDim: 1).To(dtype);
            q = q.Transpose(0, 1); k = k.Transpose(0, 1); v = v.Transpose(0, 1); // [heads/tp, n, hd]
            var outputs = new List<Tensor>(segments.Count);
            foreach (var (start, length) in segments)                              // cu_seqlens: each frame attends within itself
                outputs.Add(_attention.Bidirectional(q.Narrow(1, start, length), k.Narrow(1, start, length), v.Narrow(1, start, length))); // [heads/tp, len, hd]
            var o = Tensor.Cat(outputs, 1).Transpose(0, 1).Reshape(n, -1);          // [n, heads/tp * hd]: reshape(seq_length, -1)
            return _proj.Forward(o);                                                // [n, E]
        }
    }
}
