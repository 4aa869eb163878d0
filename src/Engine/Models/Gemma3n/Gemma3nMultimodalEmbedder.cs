using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n;

/// <summary>
/// Gemma3nMultimodalEmbedder (embed_vision / embed_audio): a modality's hard tokens or a tower's soft tokens into the
/// text width.
/// <code>
/// hard: emb = hard_embedding_norm(embedding(ids - vocab_offset))       # [tokens, C]
/// soft: emb = soft_embedding_norm(inputs_embeds)                       # [tokens, C]
/// out  = embedding_post_projection_norm(embedding_projection(emb))     # [tokens, text_hidden]; the post-norm has no scale
/// </code>
/// Under TP the table is a <see cref="VocabParallelEmbedding"/> and embedding_projection a <see cref="RowParallelLinear"/>
/// fed the FULL-WIDTH normed vector: input_is_parallel=False, each rank takes its C/tp columns and the partial products
/// are all-reduced. (<see cref="Gemma3nOptions.EmbedderInputIsParallel"/> builds it with True, vLLM's bug: at TP=2 the
/// [tokens, C] input meets a [text_hidden, C/2] shard and torch says "mat1 and mat2 shapes cannot be multiplied".)
/// </summary>
public sealed class Gemma3nMultimodalEmbedder
{
    private readonly VocabParallelEmbedding _embedding;
    private readonly Tensor _hardNorm, _softNorm;
    private readonly RowParallelLinear _projection;
    private readonly double _eps;
    private readonly ParallelContext _ctx;
    private readonly IActivationSink _sink;

    public string Prefix { get; }
    public Gemma3nEmbedderSettings Settings { get; }

    public Gemma3nMultimodalEmbedder(IWeightSource weights, string prefix, Gemma3nEmbedderSettings settings, ParallelContext ctx,
        IActivationSink? sink = null, Gemma3nOptions? options = null)
    {
        Prefix = prefix;
        Settings = settings;
        _ctx = ctx;
        _sink = sink ?? NoCapture.Instance;
        _eps = settings.RmsNormEps;
        _embedding = VocabParallelEmbedding.Load(weights, prefix + ".embedding", ctx.Tp);
        _hardNorm = weights.Get(prefix + ".hard_embedding_norm.weight");
        _softNorm = weights.Get(prefix + ".soft_embedding_norm.weight");
        _projection = RowParallelLinear.Load(weights, prefix + ".embedding_projection", ctx.Tp,
            inputIsParallel: (options ?? Gemma3nOptions.Default).EmbedderInputIsParallel);
    }

    /// <summary>Hard tokens: absolute ids [tokens] in [vocab_offset, vocab_offset + vocab_size) -> [tokens, text_hidden].</summary>
    public Tensor ForwardHard(Tensor ids, bool record = true)
    {
        var local = ids.ToInt64Array();
        for (int i = 0; i < local.Length; i++)
        {
            local[i] -= Settings.VocabOffset;
            if (local[i] < 0 || local[i] >= Settings.VocabSize)
                throw new ArgumentException($"{Prefix}: token id {local[i] + Settings.VocabOffset} at position {i} is outside " +
                                            $"[{Settings.VocabOffset}, {Settings.VocabOffset + Settings.VocabSize})");
        }
        var emb = _embedding.Forward(Tensor.FromArray(local, local.Length));              // [tokens, C]
        var normed = Norms.RmsNorm(emb, _hardNorm, _eps, RmsNormKind.GemmaScaled);
        if (record) Record(".hard_embedding_norm", normed);
        return Project(normed, record);
    }

    /// <summary>
    /// Hard tokens of a graph step: ids already local ([tokens] int64 on the device, id - vocab_offset, from
    /// <see cref="Cuda.CudaDecodeOps.IdsMap"/>) through the unchecked lookup (no read-back) -> [tokens, text_hidden].
    /// </summary>
    public Tensor ForwardHardLocal(Tensor localIds, Tensor scratch)
    {
        var emb = Cuda.CudaDecodeOps.EmbeddingUnchecked(_embedding.LocalWeight, localIds, scratch);   // [tokens, C]
        var normed = Norms.RmsNorm(emb, _hardNorm, _eps, RmsNormKind.GemmaScaled);
        Record(".hard_embedding_norm", normed);
        return Project(normed, record: true);
    }

    /// <summary>Soft tokens from a tower: [tokens, C] -> [tokens, text_hidden].</summary>
    public Tensor ForwardSoft(Tensor softTokens, bool record = true)
    {
        if (softTokens.Rank != 2 || softTokens.Shape[1] != Settings.HiddenSize)
            throw new ArgumentException($"{Prefix}: soft tokens must be [tokens, {Settings.HiddenSize}] ({Settings.JsonPath}.hidden_size), got {Shape.Format(softTokens.Shape)}");
        var normed = Norms.RmsNorm(softTokens, _softNorm, _eps, RmsNormKind.GemmaScaled);
        if (record) Record(".soft_embedding_norm", normed);
        return Project(normed, record: false);   // HF's hooks keep the first call of these modules: the hard-token pass
    }

    private Tensor Project(Tensor normed, bool record)
    {
        Tensor projected;
        try
        {
            projected = _projection.Forward(normed);                                     // [tokens, text_hidden]
        }
        catch (Exception e) when (e is not CollectiveException { Failure: CollectiveFailure.PeerFailed })
        {
            throw new ModuleFailedException(Prefix + ".embedding_projection", _ctx.WorldRank, e);
        }
        if (record) Record(".embedding_projection", projected);
        var output = Norms.RmsNorm(projected, null, _eps, RmsNormKind.GemmaNoScale);
        if (record)
        {
            Record(".embedding_post_projection_norm", output);
            Record("", output);
        }
        return output;
    }

    private void Record(string suffix, Tensor value)
    {
        string module = Prefix + suffix;
        if (_sink.Wants(module)) _sink.Record(module, _ctx.WorldRank, value.Unsqueeze(0), ShardSpec.Whole);   // [1, tokens, ...]
    }
}
