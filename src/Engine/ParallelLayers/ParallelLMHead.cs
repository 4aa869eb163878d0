using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>
/// vLLM's ParallelLMHead: the [vocab, hidden] output projection split over the padded vocab like
/// <see cref="VocabParallelEmbedding"/> (rank r holds rows [r*Vp/tp, (r+1)*Vp/tp)); each rank computes its logits
/// [tokens, Vp/tp] (zero for padding rows), an all-gather along the last dim gives [tokens, Vp], trimmed to
/// [tokens, vocab]. With tied embeddings the weight is the embedding table.
/// </summary>
public sealed class ParallelLMHead
{
    private readonly IProcessGroup _tp;
    private readonly Linear _local;

    public int VocabSize { get; }
    public int PaddedVocabSize { get; }

    public ParallelLMHead(Tensor fullWeight, IProcessGroup tp)
    {
        _tp = tp;
        VocabSize = fullWeight.Shape[0];
        PaddedVocabSize = Sharding.RoundUp(VocabSize, VocabParallelEmbedding.PaddingMultiple * tp.WorldSize);
        int per = PaddedVocabSize / tp.WorldSize;
        int start = Math.Min(tp.Rank * per, VocabSize), end = Math.Min(start + per, VocabSize);
        // [per, hidden]: this rank's rows of the table (a view: no host copy beside the packed one) and zero padding rows
        var rows = fullWeight.Narrow(0, start, end - start);
        _local = end - start == per ? new Linear(rows)
            : Linear.Stacked(end == start ? [Tensor.ZerosLike(fullWeight, fullWeight.DType, per, fullWeight.Shape[1])]
                : [rows, Tensor.ZerosLike(fullWeight, fullWeight.DType, per - (end - start), fullWeight.Shape[1])]);
    }

    /// <summary>hidden [tokens, hidden] -> logits [tokens, vocab] on every rank.</summary>
    /// <param name="output">A buffer for [tokens, vocab] (see <see cref="Linear.Forward(Tensor, Tensor?)"/>), used at
    /// TP=1 without vocab padding only; the logits are then its view, valid until the buffer's next use.</param>
    public Tensor Forward(Tensor hidden, Tensor? output = null)
    {
        var local = _local.Forward(hidden, _tp.WorldSize == 1 && PaddedVocabSize == VocabSize ? output : null); // [tokens, Vp/tp]
        var all = _tp.WorldSize == 1 ? local : _tp.AllGather(local, -1);   // [tokens, Vp]
        return all.Narrow(-1, 0, VocabSize).Contiguous();                  // [tokens, vocab]
    }
}
