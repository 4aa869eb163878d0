using Harness.Runs;

namespace Harness.Reports;

/// <summary>One entry of a top-k list: a token id and its natural-log probability.</summary>
public sealed record TopKEntry(long Token, double Logprob);

/// <summary>
/// A scenario's token-by-token comparison, flattened for the report. ReferenceTokens/EngineTokens are the generated
/// ids when the caller had the sequences (TokenReport alone does not carry them), else null. The top-k lists are those
/// of the first divergent step, most likely first; empty when there is no divergence. Verdict is "identical",
/// "accepted-divergence" or "failed".
/// </summary>
public sealed record TokenRecord(
    IReadOnlyList<long>? ReferenceTokens,
    IReadOnlyList<long>? EngineTokens,
    int ReferenceLength,
    int EngineLength,
    int MatchedPrefix,
    int? FirstDivergentStep,
    long? ReferenceToken,
    long? EngineToken,
    string Verdict,
    string Reason,
    IReadOnlyList<TopKEntry> ReferenceTopK,
    IReadOnlyList<TopKEntry> EngineTopK,
    double MaxLogprobDiff)
{
    public const string Identical = "identical";
    public const string AcceptedDivergence = "accepted-divergence";
    public const string Failed = "failed";

    public bool Passed => Verdict != Failed;

    /// <summary>The report's view of a token comparison; the sequences, when given, supply the full token lists.</summary>
    public static TokenRecord From(TokenReport report, TokenSequence? reference = null, TokenSequence? engine = null)
    {
        ArgumentNullException.ThrowIfNull(report);
        return new TokenRecord(reference?.Tokens.ToArray(), engine?.Tokens.ToArray(), report.ReferenceLength, report.EngineLength,
            report.MatchedPrefix, report.FirstDivergentStep, report.ReferenceToken, report.EngineToken,
            report.Verdict switch
            {
                TokenVerdict.Identical => Identical,
                TokenVerdict.AcceptedDivergence => AcceptedDivergence,
                _ => Failed,
            },
            OneLine(report.Reason),
            Entries(report.ReferenceTopK), Entries(report.EngineTopK), report.MaxLogprobDiff);
    }

    /// <summary>"matched/reference-length verdict", e.g. "3/8 failed": the summary table's token column.</summary>
    public string Agreement => $"{MatchedPrefix}/{ReferenceLength} {Verdict}";

    internal static string OneLine(string? text) =>
        string.Join(' ', (text ?? "").Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    private static TopKEntry[] Entries(IReadOnlyList<TokenLogprob>? list) =>
        list is null ? [] : list.Select(e => new TopKEntry(e.Token, e.Logprob)).ToArray();
}
