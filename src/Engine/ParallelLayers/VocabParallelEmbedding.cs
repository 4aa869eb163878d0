using Harness.Engine.Distributed;
using Harness.Engine.Tensors;

namespace Harness.Engine.ParallelLayers;

/// <summary>
/// vLLM's VocabParallelEmbedding: the vocab is padded to a multiple of 64 and split evenly: rank r holds rows
/// [r*Vp/tp, (r+1)*Vp/tp) of the [vocab, hidden] table (rows past the real vocab are zero padding). Lookup of ids
/// [tokens] masks ids outside the rank's range to zero rows; an all-reduce sums the ranks' partial rows, so every
/// rank ends with the full [tokens, hidden] embeddings.
/// </summary>
public sealed class VocabParallelEmbedding
{
    public const int PaddingMultiple = 64;

    private readonly IProcessGroup _tp;

    public int VocabSize { get; }
    public int PaddedVocabSize { get; }
    public int Start { get; }
    public int End { get; }           // exclusive, clamped to the real vocab
    public Tensor LocalWeight { get; } // [End - Start, hidden], a view of the full table

    public VocabParallelEmbedding(Tensor fullWeight, IProcessGroup tp, string name)
        : this(tp, fullWeight.Shape[0], (start, length) => fullWeight.Narrow(0, start, length), name)
    {
    }

    private VocabParallelEmbedding(IProcessGroup tp, int vocabSize, Func<int, int, Tensor> rows, string name)
    {
        _tp = tp;
        VocabSize = vocabSize;
        PaddedVocabSize = Sharding.RoundUp(VocabSize, PaddingMultiple * tp.WorldSize);
        int per = PaddedVocabSize / tp.WorldSize;
        Start = Math.Min(tp.Rank * per, VocabSize);
        End = Math.Min(Start + per, VocabSize);
        LocalWeight = rows(Start, End - Start);
        if (LocalWeight.Rank != 2)
            throw new ArgumentException($"{name}.weight: an embedding table is [vocab, hidden], got shape {Shape.Format(LocalWeight.Shape)}");
    }

    /// <summary>
    /// This rank's rows only, straight from the source (<see cref="IWeightSource.GetRows"/>): from a checkpoint, a
    /// view of just those rows of the mapping, so a rank never reads, converts or uploads the other ranks' rows of a
    /// multi-GB table (Gemma3n's per-layer table: 262144 x 30 x 256).
    /// </summary>
    public static VocabParallelEmbedding Load(IWeightSource weights, string prefix, IProcessGroup tp)
    {
        string name = prefix + ".weight";
        var shape = weights.ShapeOf(name);
        if (shape.Length != 2)
            throw new ArgumentException($"{name}: an embedding table is [vocab, hidden], got shape {Shape.Format(shape)}");
        return new(tp, shape[0], (start, length) => weights.GetRows(name, start, length), prefix);
    }

    /// <summary>ids [tokens] (int64/int32) -> [tokens, hidden], summed over ranks.</summary>
    public Tensor Forward(Tensor ids)
    {
        if (_tp.WorldSize == 1 && Ops.OpBackend.Of(LocalWeight).WholeVocabLookup(LocalWeight, ids) is { } whole)
            return whole;                                                        // one rank on a GPU: a plain lookup
        var flat = ids.ToInt64Array();
        var local = new long[flat.Length];                                       // row in this shard, -1: another rank's
        for (int i = 0; i < flat.Length; i++)
        {
            long id = flat[i];
            if (id < 0 || id >= VocabSize)
                throw new IndexOutOfRangeException($"token id {id} at position {i} is outside the vocabulary of {VocabSize}");
            local[i] = id >= Start && id < End ? id - Start : -1;
        }
        // this rank's rows gathered where the table lies (zero rows for ids of other ranks), then the all-reduce
        var rows = LocalWeight.Backend.IndexSelect(LocalWeight, 0, local);      // [tokens, hidden]
        return _tp.WorldSize == 1 ? rows : _tp.AllReduce(rows);
    }
}
