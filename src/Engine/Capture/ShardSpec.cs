namespace Harness.Engine.Capture;

/// <summary>How a captured engine tensor relates to the reference's full tensor at the same module path.</summary>
public abstract record ShardSpec
{
    /// <summary>The whole tensor.</summary>
    public sealed record Full : ShardSpec
    {
        public override string ToString() => "full";
    }

    /// <summary>Rank's even chunk along Dim (tensor parallelism): reference[.., r*n/ws : (r+1)*n/ws, ..].</summary>
    public sealed record Sharded(int Dim, int Rank, int WorldSize) : ShardSpec
    {
        public override string ToString() => $"shard {Rank}/{WorldSize} of dim {Dim}";
    }

    /// <summary>
    /// A token slice (sequence parallelism): reference rows [Start, Start+Count) along Dim. Rows past the reference's
    /// end are padding (tokens padded to a multiple of TP) and are not compared.
    /// </summary>
    public sealed record Rows(int Start, int Count, int Dim) : ShardSpec
    {
        public override string ToString() => $"tokens {Start}..{Start + Count - 1} (dim {Dim})";
    }

    public static readonly ShardSpec Whole = new Full();
}
