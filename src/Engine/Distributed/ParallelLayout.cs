namespace Harness.Engine.Distributed;

/// <summary>
/// vLLM's rank layout, independent of how groups are implemented: world rank = pp_rank * tp_size + tp_rank; the TP
/// group of a rank is the tp_size consecutive ranks of its stage {pp*tp .. pp*tp+tp-1}; its PP group is the ranks
/// with the same tp_rank {tp_rank, tp_rank+tp, ...}. <see cref="Build"/> takes a group factory, so a thread-backed
/// world and an NCCL-backed one lay ranks out the same way.
/// </summary>
public static class ParallelLayout
{
    public static int[] TpGroupRanks(int worldRank, int tpSize, int ppSize)
    {
        Check(worldRank, tpSize, ppSize);
        int stage = worldRank / tpSize;
        return Enumerable.Range(stage * tpSize, tpSize).ToArray();
    }

    public static int[] PpGroupRanks(int worldRank, int tpSize, int ppSize)
    {
        Check(worldRank, tpSize, ppSize);
        int tpRank = worldRank % tpSize;
        return Enumerable.Range(0, ppSize).Select(p => p * tpSize + tpRank).ToArray();
    }

    /// <summary>
    /// This rank's context; <paramref name="createGroup"/>(ranks, "tp" or "pp") returns this rank's handle on the group
    /// of those world ranks (every rank of a group asks for it with the same ranks and name).
    /// </summary>
    public static ParallelContext Build(int worldRank, int tpSize, int ppSize, bool sequenceParallel,
        Func<int[], string, IProcessGroup> createGroup)
    {
        ArgumentNullException.ThrowIfNull(createGroup);
        var tp = createGroup(TpGroupRanks(worldRank, tpSize, ppSize), "tp");
        var pp = createGroup(PpGroupRanks(worldRank, tpSize, ppSize), "pp");
        var context = new ParallelContext(tp, pp, sequenceParallel);
        if (context.WorldRank != worldRank || context.TpSize != tpSize || context.PpSize != ppSize)
            throw new InvalidOperationException(
                $"layout tp={tpSize} pp={ppSize}: world rank {worldRank} got groups {tp.Name} (rank {tp.Rank}) and {pp.Name} (rank {pp.Rank}), which give world rank {context.WorldRank}");
        return context;
    }

    private static void Check(int worldRank, int tpSize, int ppSize)
    {
        if (tpSize < 1 || ppSize < 1)
            throw new ArgumentOutOfRangeException(nameof(tpSize), $"layout tp={tpSize} pp={ppSize}: sizes must be at least 1");
        if (worldRank < 0 || worldRank >= tpSize * ppSize)
            throw new ArgumentOutOfRangeException(nameof(worldRank),
                $"world rank {worldRank} is outside a layout of tp={tpSize} x pp={ppSize} = {tpSize * ppSize} ranks");
    }
}
