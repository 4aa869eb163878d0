namespace Harness.Engine.Distributed;

/// <summary>
/// One rank's view of the parallel layout, as vLLM's parallel_state: a tensor-parallel group, a pipeline-parallel group,
/// and whether sequence parallelism is on. World rank = pp_rank * tp_size + tp_rank (TP groups are consecutive ranks).
/// </summary>
public sealed record ParallelContext(IProcessGroup Tp, IProcessGroup Pp, bool SequenceParallel = false)
{
    public int TpRank => Tp.Rank;
    public int TpSize => Tp.WorldSize;
    public int PpRank => Pp.Rank;
    public int PpSize => Pp.WorldSize;
    public int WorldRank => PpRank * TpSize + TpRank;
    public bool IsFirstStage => PpRank == 0;
    public bool IsLastStage => PpRank == PpSize - 1;

    /// <summary>TP=1, PP=1: the single-process layout.</summary>
    public static ParallelContext Single { get; } = new(new SingleProcessGroup("tp"), new SingleProcessGroup("pp"));

    public override string ToString() => $"tp {TpRank}/{TpSize}, pp {PpRank}/{PpSize}{(SequenceParallel ? ", sp" : "")}";
}
