using Harness.Engine.Capture;
using Harness.Engine.Models.Common;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// LlamaDecoderLayer in vLLM's form: the residual add is fused into the next RMSNorm, so a layer takes and returns
/// (hidden, residual) with HF's output = hidden + residual.
/// <para>Without sequence parallelism both are [tokens, hidden] on every rank.</para>
/// <para>With sequence parallelism (tokens padded to Tp, a multiple of tp; L = Tp/tp): row-parallel outputs are
/// reduce-scattered over tokens, so hidden and residual are this rank's token chunk [L, hidden], rows
/// [rank*L, (rank+1)*L); the normed chunk is all-gathered back to [Tp, hidden] before each column-parallel layer.
/// The model's first layer gets the full embeddings as hidden and no residual, and slices the residual rank-aware.</para>
/// </summary>
public sealed class LlamaDecoderLayer
{
    private readonly Tensor _inputNorm, _postNorm;
    private readonly double _eps;
    private readonly ParallelContext _ctx;
    private readonly IActivationSink _sink;

    public string Prefix { get; }
    public LlamaAttention SelfAttn { get; }
    public ParallelGatedMlp Mlp { get; }

    private readonly bool _residualFirstSlice;
    private readonly bool _normSumOfSquaresBf16;
    private readonly double _branchScale;

    public LlamaDecoderLayer(IWeightSource weights, string prefix, Config.TextConfig config, ParallelContext ctx, IActivationSink sink,
        LlamaOptions? options = null)
    {
        _residualFirstSlice = (options ?? LlamaOptions.None).SpResidualFirstSlice;
        _normSumOfSquaresBf16 = (options ?? LlamaOptions.None).NormSumOfSquaresBf16;
        _branchScale = (options ?? LlamaOptions.None).ResidualBranchScale;
        Prefix = prefix;
        _ctx = ctx;
        _sink = sink;
        _eps = config.NormEps ?? 1e-6;
        _inputNorm = weights.Get(prefix + ".input_layernorm.weight");
        _postNorm = weights.Get(prefix + ".post_attention_layernorm.weight");
        SelfAttn = new LlamaAttention(weights, prefix + ".self_attn", config, ctx);
        Mlp = new ParallelGatedMlp(weights, prefix + ".mlp", ctx, config.MlpBias, config.HiddenAct ?? "silu");
    }

    /// <param name="hidden">Full [Tp, hidden] embeddings when residual is null, else [tokens or L, hidden].</param>
    /// <param name="realTokens">Real (unpadded) token count T.</param>
    /// <param name="workspace">Host buffers for the glue between linear layers (norm and activation outputs, q, the
    /// attention output); null: fresh tensors.</param>
    /// <param name="residualInPlace">Whether the residual add may overwrite the residual it is given (it is this forward's
    /// own tensor: one rank, no pipeline hand-over).</param>
    public (Tensor Hidden, Tensor Residual) Forward(Tensor hidden, Tensor? residual, Tensor cos, Tensor sin, KvCache cache, int realTokens,
        DecoderWorkspace? workspace = null, bool residualInPlace = false)
    {
        _ws = workspace;
        _inPlace = residualInPlace;
        bool sp = _ctx.SequenceParallel;
        _realTokens = realTokens;
        Tensor normed;
        bool normedIsLocal;
        long t0 = LlamaProfile.Now();
        if (residual is null)
        {
            residual = sp ? SliceResidual(hidden) : hidden;                   // first layer: the embeddings are the residual
            normed = Norm(hidden, _inputNorm);                                // [Tp, hidden], all tokens
            normedIsLocal = false;
        }
        else
        {
            (residual, normed) = AddNorm(hidden, residual, _inputNorm);      // fused add: HF's previous layer output
            normedIsLocal = sp;
        }
        LlamaProfile.Add("input_layernorm", t0);
        Capture(".input_layernorm", normed, normedIsLocal);
        var attnIn = normedIsLocal ? _ctx.Tp.AllGather(normed, 0) : normed;  // [Tp, hidden]

        Tensor attn;
        try
        {
            attn = SelfAttn.Forward(attnIn, cos, sin, cache, realTokens, workspace);    // [Tp, hidden] (partial under SP)
        }
        catch (Exception e) when (e is not Distributed.CollectiveException { Failure: Distributed.CollectiveFailure.PeerFailed })
        {
            throw new ModuleFailedException(Prefix + ".self_attn", _ctx.WorldRank, e);
        }
        if (sp) attn = _ctx.Tp.ReduceScatter(attn, 0);                        // [L, hidden]
        Capture(".self_attn", attn, sp);
        if (_branchScale != 1) attn = Elementwise.Mul(attn, _branchScale);  // the residual-scale-off fault

        t0 = LlamaProfile.Now();
        (residual, var post) = AddNorm(attn, residual, _postNorm);            // [L or T, hidden]
        LlamaProfile.Add("post_attention_layernorm", t0);
        Capture(".post_attention_layernorm", post, sp);
        var mlpIn = sp ? _ctx.Tp.AllGather(post, 0) : post;                   // [Tp, hidden]

        var mlp = Mlp.Forward(mlpIn, workspace);                                         // [Tp, hidden] (partial under SP)
        if (sp) mlp = _ctx.Tp.ReduceScatter(mlp, 0);                          // [L, hidden]
        Capture(".mlp", mlp, sp);
        if (_branchScale != 1) mlp = Elementwise.Mul(mlp, _branchScale);    // the residual-scale-off fault
        if (_sink.Wants(Prefix)) Capture("", Elementwise.Add(mlp, residual), sp); // HF's layer output
        return (mlp, residual);
    }

    /// <summary>This rank's chunk of the full residual: rows [rank*L, (rank+1)*L) (the fault takes [0, L) everywhere).</summary>
    private Tensor SliceResidual(Tensor full)
    {
        int l = full.Shape[0] / _ctx.TpSize;
        int start = _residualFirstSlice ? 0 : _ctx.TpRank * l;                 // the bug: [0:L] on every rank
        return full.Narrow(0, start, l);
    }

    private DecoderWorkspace? _ws;
    private bool _inPlace;

    private Tensor Norm(Tensor x, Tensor weight)
    {
        if (_normSumOfSquaresBf16) return NormSumOfSquaresBf16(x, weight);
        if (!FusedHost(x, x, weight)) return Norms.RmsNorm(x, weight, _eps, RmsNormKind.Llama);
        var normed = NormOut(x, weight);
        Norms.AddRmsNormInto(null, x, weight, _eps, null, normed);
        return normed;
    }

    // residual = x + residual; normed = RMSNorm(residual): one kernel on a GPU (same roundings), one pass on the host
    // (Norms.AddRmsNormInto, in place on the residual when this forward owns it).
    private (Tensor Residual, Tensor Normed) AddNorm(Tensor x, Tensor residual, Tensor weight)
    {
        if (x.IsCuda && residual.IsCuda && x.DType == residual.DType && Shape.SequenceEqual(x.Shape, residual.Shape))
            return Cuda.CudaOps.AddRmsNorm(x, residual, weight, (float)_eps);
        if (!FusedHost(x, residual, weight) || _normSumOfSquaresBf16)
        {
            var sum = Elementwise.Add(x, residual);
            return (sum, Norm(sum, weight));
        }
        var sumOut = _inPlace ? residual : Tensor.Zeros(residual.DType, residual.ShapeArray);
        var normed = NormOut(residual, weight);
        Norms.AddRmsNormInto(x, residual, weight, _eps, sumOut, normed);
        return (sumOut, normed);
    }

    /// <summary>
    /// The rms-norm-sum-of-squares-bf16 fault: LlamaRMSNorm with its sum of squares accumulated in bfloat16, each partial
    /// sum rounded, where HF keeps float32 (<c>variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)</c>);
    /// the rest as HF: <c>weight * (h * rsqrt(variance + eps)).to(input_dtype)</c>. [rows, n] in, the same out.
    /// </summary>
    private Tensor NormSumOfSquaresBf16(Tensor x, Tensor weight)
    {
        var h = OpSupport.Float32Contiguous(x.IsCuda ? x.ToHost() : x).Span<float>();
        var w = OpSupport.Float32Contiguous(weight.IsCuda ? weight.ToHost() : weight).Span<float>();
        int n = x.Size(-1), rows = n == 0 ? 0 : h.Length / n;
        var y = new float[h.Length];
        for (int r = 0; r < rows; r++)
        {
            var row = h.Slice(r * n, n);
            float ss = 0;
            foreach (var v in row) ss = BFloat16.Round(ss + v * v);               // the bug: a bf16 accumulator
            float inv = 1f / MathF.Sqrt(ss / n + (float)_eps);
            for (int i = 0; i < n; i++)
            {
                float normed = row[i] * inv;
                if (x.DType == DType.BFloat16) normed = BFloat16.Round(normed);   // h.to(input_dtype)
                y[r * n + i] = w[i] * normed;
            }
        }
        var result = OpSupport.FromFloat32(Tensor.FromArray(y, x.ShapeArray), x.DType);
        return x.IsCuda ? result.ToDevice(x.CudaDevice) : result;
    }

    private static bool FusedHost(Tensor x, Tensor residual, Tensor weight) =>
        !x.IsCuda && !residual.IsCuda && x.DType == residual.DType && x.DType is DType.Float32 or DType.BFloat16
        && weight.DType is DType.Float32 or DType.BFloat16 && weight.IsContiguous && x.Rank == 2 && x.IsContiguous && residual.IsContiguous
        && Shape.SequenceEqual(x.Shape, residual.Shape);

    private Tensor NormOut(Tensor like, Tensor weight)
    {
        var dt = weight.DType != like.DType ? DType.Float32 : like.DType;
        return _ws?.Get(DecoderWorkspace.Normed, dt, like.Shape[0], like.Shape[1]) ?? Tensor.Zeros(dt, like.ShapeArray);
    }

    private int _realTokens;

    private void Capture(string suffix, Tensor value, bool local)
    {
        string module = Prefix + suffix;
        if (!_sink.Wants(module)) return;
        int l = value.Shape[0];
        ShardSpec spec = local ? new ShardSpec.Rows(_ctx.TpRank * l, l, 1) : ShardSpec.Whole;
        if (!local) value = value.Narrow(0, 0, Math.Min(_realTokens, l));       // drop SP padding rows
        _sink.Record(module, _ctx.WorldRank, value.Unsqueeze(0), spec);     // [1, tokens, hidden], HF's layout
    }
}
