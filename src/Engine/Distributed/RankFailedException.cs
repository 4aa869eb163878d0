namespace Harness.Engine.Distributed;

/// <summary>
/// Thrown by <see cref="ThreadWorld.Run(Action{int})"/> when at least one rank failed. The message names every failed
/// rank and the first line of its error, root causes first (then the ranks that were only released because of them);
/// <see cref="InnerExceptions"/> keeps the exceptions in that order and <see cref="Exception.InnerException"/> is the
/// first root cause.
/// </summary>
public sealed class RankFailedException : Exception
{
    public RankFailedException(int worldSize, IReadOnlyList<(int Rank, Exception Error)> failures)
        : base(Format(worldSize, Order(failures)), Order(failures).Select(f => f.Error).FirstOrDefault())
    {
        var ordered = Order(failures);
        Failures = ordered;
        InnerExceptions = ordered.Select(f => f.Error).ToArray();
    }

    /// <summary>(world rank, error), root causes first, each part in rank order.</summary>
    public IReadOnlyList<(int Rank, Exception Error)> Failures { get; }

    public IReadOnlyList<Exception> InnerExceptions { get; }

    public IReadOnlyList<int> FailedRanks => Failures.Select(f => f.Rank).ToArray();

    /// <summary>The failure of one rank, or null when it did not fail.</summary>
    public Exception? ErrorOf(int rank) => Failures.FirstOrDefault(f => f.Rank == rank).Error;

    /// <summary>"rank 1 failed: InvalidOperationException: boom" (the error's first line).</summary>
    public static string Describe(int rank, Exception error) => $"rank {rank} failed: {error.GetType().Name}: {FirstLine(error.Message)}";

    public static string FirstLine(string text)
    {
        int nl = text.IndexOfAny(['\r', '\n']);
        return nl < 0 ? text : text[..nl];
    }

    private static bool IsSecondary(Exception e) => e is CollectiveException { Failure: CollectiveFailure.PeerFailed };

    private static List<(int Rank, Exception Error)> Order(IReadOnlyList<(int Rank, Exception Error)> failures) =>
        failures.OrderBy(f => IsSecondary(f.Error) ? 1 : 0).ThenBy(f => f.Rank).ToList();

    private static string Format(int worldSize, List<(int Rank, Exception Error)> failures) =>
        $"{failures.Count} of {worldSize} ranks failed:" +
        string.Concat(failures.Select(f => Environment.NewLine + "  " + Describe(f.Rank, f.Error)));
}
