using System.Globalization;
using System.Text;

namespace Harness.Runs;

/// <summary>The outcome of a token-by-token comparison.</summary>
public enum TokenVerdict
{
    /// <summary>Every token matched (and the matched steps' logprobs are within tolerance).</summary>
    Identical,
    /// <summary>The sequences diverged at a near tie that both sides consider plausible; the later steps are compared on the
    /// engine's teacher-forced decoding (<see cref="TokenReport.ForcedSteps"/>) when the scenario gives it.</summary>
    AcceptedDivergence,
    Failed,
}

/// <summary>
/// What <see cref="TokenComparison"/> found: the matched prefix, the first divergent step with both chosen tokens and both
/// top-k lists (most likely first), the verdict and the reason in words, and the largest |logprob difference| over the
/// tokens present in both top-k lists on the matched steps (the steps before the divergence).
/// </summary>
public sealed record TokenReport
{
    public required TokenVerdict Verdict { get; init; }
    public required string Reason { get; init; }
    public bool Passed => Verdict != TokenVerdict.Failed;

    public required int ReferenceLength { get; init; }
    public required int EngineLength { get; init; }

    /// <summary>Steps 0..MatchedPrefix-1 chose the same token on both sides.</summary>
    public required int MatchedPrefix { get; init; }

    /// <summary>The first step whose tokens differ; null when none does over the common length.</summary>
    public int? FirstDivergentStep { get; init; }
    public long? ReferenceToken { get; init; }
    public long? EngineToken { get; init; }
    public IReadOnlyList<TokenLogprob>? ReferenceTopK { get; init; }
    public IReadOnlyList<TokenLogprob>? EngineTopK { get; init; }

    /// <summary>Reference logprob of its own token minus that of the engine's token at the divergence (null if either is absent).</summary>
    public double? ChosenGap { get; init; }

    /// <summary>The reference's top-1 minus top-2 logprob at the divergence (null with fewer than two entries).</summary>
    public double? ReferenceTop2Gap { get; init; }

    public required double Margin { get; init; }
    public required double LogprobTolerance { get; init; }

    /// <summary>Max |engine - reference logprob| over tokens in both top-k lists on matched steps; 0 when no pair.</summary>
    public required double MaxLogprobDiff { get; init; }
    public int? MaxLogprobDiffStep { get; init; }
    public long? MaxLogprobDiffToken { get; init; }
    public required int LogprobPairs { get; init; }

    /// <summary>Steps after an accepted divergence compared on the engine's teacher-forced decoding (0: none).</summary>
    public int ForcedSteps { get; init; }

    /// <summary>With the float64 oracle: the engine's and the reference's largest logprob error against it, and the bound.</summary>
    public double? EngineOracleError { get; init; }
    public double? ReferenceOracleError { get; init; }
    public double? OracleLogprobBound { get; init; }

    /// <summary>Token id to text for display; null shows ids only.</summary>
    public Func<long, string>? Decode { get; init; }

    public override string ToString()
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(ci, $"token comparison: {(Passed ? "PASS" : "FAIL")} ({Verdict})\n");
        sb.Append(ci, $"  lengths: reference {ReferenceLength}, engine {EngineLength}; matched prefix {MatchedPrefix}\n");
        if (FirstDivergentStep is int step)
        {
            sb.Append(ci, $"  first divergence at step {step}: reference token {Tok(ReferenceToken!.Value)}, engine token {Tok(EngineToken!.Value)}\n");
            sb.Append(ci, $"  step {step} top-k (* = chosen token):\n");
            AppendTable(sb);
        }
        sb.Append(ci, $"  matched-step logprobs: max |diff| {MaxLogprobDiff:E3}");
        if (MaxLogprobDiffStep is int s) sb.Append(ci, $" (step {s}, token {Tok(MaxLogprobDiffToken!.Value)})");
        sb.Append(ci, $" over {LogprobPairs} pairs, tolerance {LogprobTolerance:G3}\n");
        if (OracleLogprobBound is double ob)
            sb.Append(ci, $"  against the float64 oracle: engine {EngineOracleError:E3}, the reference's own {ReferenceOracleError:E3}, bound {ob:E3}\n");
        if (ForcedSteps > 0) sb.Append(ci, $"  {ForcedSteps} step(s) after the divergence compared teacher-forced\n");
        sb.Append("  reason: ").Append(Reason).Append('\n');
        return sb.ToString();
    }

    private string Tok(long token)
    {
        var ci = CultureInfo.InvariantCulture;
        return Decode is null ? token.ToString(ci) : string.Create(ci, $"{token} {Quote(Decode(token))}");
    }

    private static string Quote(string s) =>
        "\"" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";

    private void AppendTable(StringBuilder sb)
    {
        var r = ReferenceTopK ?? [];
        var e = EngineTopK ?? [];
        var cells = new List<string[]> { new[] { "rank", "reference", "engine" } };
        for (int i = 0; i < Math.Max(r.Count, e.Count); i++)
            cells.Add([(i + 1).ToString(CultureInfo.InvariantCulture),
                i < r.Count ? Entry(r[i], ReferenceToken) : "", i < e.Count ? Entry(e[i], EngineToken) : ""]);
        int w0 = cells.Max(c => c[0].Length), w1 = cells.Max(c => c[1].Length);
        foreach (var c in cells)
            sb.Append("    ").Append(c[0].PadLeft(w0)).Append("  ").Append(c[1].PadRight(w1)).Append("  ").Append(c[2]).Append('\n');
    }

    private string Entry(TokenLogprob t, long? chosen) =>
        string.Create(CultureInfo.InvariantCulture, $"{(t.Token == chosen ? "*" : " ")}{Tok(t.Token)} {t.Logprob:F4}");
}
