using Harness.Engine.Tensors;

namespace Harness.Engine.Capture;

/// <summary>
/// How a captured engine tensor relates to the reference's full tensor at the same module path: one type for the engine
/// (which records it) and the harness (which resolves it against the reference's shape).
/// <list type="bullet">
/// <item><see cref="Full"/> (<see cref="Whole"/>): the engine holds the whole tensor.</item>
/// <item><see cref="Sharded"/>(dim, rank, worldSize): tensor parallelism; rank's chunk of the reference along dim, elements
/// [rank*n/ws, (rank+1)*n/ws) where n is the reference's size along dim (equal chunks when ws divides n, which is what TP
/// layers use; otherwise the balanced split this formula gives, sizes differing by at most one).</item>
/// <item><see cref="Rows"/>(start, count, dim): sequence parallelism; tokens [start, start+count) of the reference along dim.
/// When the tokens were padded to a multiple of TP, start+count may run past the reference's end: the engine tensor must
/// still have count rows along dim (its shape is checked against that), but only the rows that exist in the reference,
/// [start, min(start+count, n)), are compared; the padding rows are excluded, whatever they hold.</item>
/// </list>
/// Negative dims count from the end of the reference's shape.
/// </summary>
public abstract record ShardSpec
{
    private protected ShardSpec() { }

    /// <summary>The whole tensor.</summary>
    public static readonly ShardSpec Whole = new Full();

    /// <summary>
    /// Where the engine tensor lies in a reference of this shape; false with a reason when the spec cannot apply to it
    /// (dim outside the reference's rank).
    /// </summary>
    public abstract bool TryResolve(ReadOnlySpan<int> referenceShape, out ShardWindow window, out string error);

    /// <summary>The whole tensor.</summary>
    public sealed record Full : ShardSpec
    {
        public override bool TryResolve(ReadOnlySpan<int> referenceShape, out ShardWindow window, out string error)
        {
            window = new ShardWindow(null, 0, 0, 0, referenceShape.ToArray(), "");
            error = "";
            return true;
        }

        public override string ToString() => "full";
    }

    /// <summary>Rank's chunk [rank*n/ws, (rank+1)*n/ws) along Dim (tensor parallelism).</summary>
    public sealed record Sharded : ShardSpec
    {
        public Sharded(int dim, int rank, int worldSize)
        {
            if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), $"world size {worldSize} must be at least 1");
            if (rank < 0 || rank >= worldSize)
                throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} is outside a world of {worldSize}");
            (Dim, Rank, WorldSize) = (dim, rank, worldSize);
        }

        public int Dim { get; }
        public int Rank { get; }
        public int WorldSize { get; }

        public override bool TryResolve(ReadOnlySpan<int> referenceShape, out ShardWindow window, out string error)
        {
            if (!TryWrap(Dim, referenceShape, out int d, out error)) { window = null!; return false; }
            long n = referenceShape[d];
            int start = (int)(Rank * n / WorldSize), end = (int)((Rank + 1) * n / WorldSize);
            var expected = referenceShape.ToArray();
            expected[d] = end - start;
            window = new ShardWindow(d, start, end - start, end - start, expected, $"dim {d} [{start}, {end}) of {n}");
            return true;
        }

        public override string ToString() => $"sharded dim {Dim} rank {Rank} of {WorldSize}";
    }

    /// <summary>Tokens [Start, Start+Count) along Dim (sequence parallelism); rows past the reference's end are padding.</summary>
    public sealed record Rows : ShardSpec
    {
        public Rows(int start, int count, int dim)
        {
            if (start < 0) throw new ArgumentOutOfRangeException(nameof(start), $"row start {start} is negative");
            if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), $"row count {count} is negative");
            (Start, Count, Dim) = (start, count, dim);
        }

        public int Start { get; }
        public int Count { get; }
        public int Dim { get; }

        public override bool TryResolve(ReadOnlySpan<int> referenceShape, out ShardWindow window, out string error)
        {
            if (!TryWrap(Dim, referenceShape, out int d, out error)) { window = null!; return false; }
            int n = referenceShape[d];
            int valid = Math.Clamp(n - Start, 0, Count);
            int padding = Count - valid;
            var expected = referenceShape.ToArray();
            expected[d] = Count;
            string tokens = valid == 0 ? $"no tokens of {n}" : $"tokens {Start}..{Start + valid - 1} of {n}";
            window = new ShardWindow(d, Math.Min(Start, n), valid, Count, expected,
                padding == 0 ? tokens : $"{tokens}, {padding} padding row{(padding == 1 ? "" : "s")}");
            return true;
        }

        public override string ToString() => $"rows [{Start}, {Start + Count}) dim {Dim}";
    }

    private static bool TryWrap(int dim, ReadOnlySpan<int> shape, out int wrapped, out string error)
    {
        wrapped = dim < 0 ? dim + shape.Length : dim;
        if (wrapped < 0 || wrapped >= shape.Length)
        {
            error = $"dim {dim} is out of range for a reference of shape {Shape.Format(shape)}";
            return false;
        }
        error = "";
        return true;
    }
}

/// <summary>
/// A <see cref="ShardSpec"/> applied to one reference shape. Dim is null for a full tensor. The reference slice is
/// [ReferenceStart, ReferenceStart+ValidLength) along Dim; the engine tensor must have ExpectedEngineShape (EngineLength
/// along Dim, padding included), and its first ValidLength entries along Dim are the ones compared. Describe is the
/// human part of a row's label ("dim 1 [1024, 2048) of 2048", "tokens 4..6 of 7, 1 padding row"), empty for a full tensor.
/// </summary>
public sealed record ShardWindow(int? Dim, int ReferenceStart, int ValidLength, int EngineLength, int[] ExpectedEngineShape, string Describe)
{
    /// <summary>The part of the reference this engine tensor holds (a view).</summary>
    public Tensor ReferenceSlice(Tensor reference) =>
        Dim is int d ? reference.Narrow(d, ReferenceStart, ValidLength) : reference;

    /// <summary>The part of the engine tensor that is compared: all of it but the padding rows (a view).</summary>
    public Tensor EngineCompared(Tensor engine) =>
        Dim is int d && ValidLength != EngineLength ? engine.Narrow(d, 0, ValidLength) : engine;
}
