namespace Harness.Runs;

/// <summary>One entry of a step's top-k: a token id and its logprob (natural log, as vLLM and HF report them).</summary>
public readonly record struct TokenLogprob(long Token, double Logprob);

/// <summary>
/// One side of a token-by-token comparison: the generated token ids, and for each step the top-k (token, logprob)
/// list of the distribution that step's token was chosen from (any order; it is sorted for display). TopK has one list
/// per generated token.
/// </summary>
public sealed class TokenSequence
{
    public TokenSequence(long[] tokens, IReadOnlyList<IReadOnlyList<TokenLogprob>> topK)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(topK);
        if (topK.Count != tokens.Length)
            throw new ArgumentException($"{tokens.Length} tokens but {topK.Count} top-k lists: one list per generated token", nameof(topK));
        Tokens = tokens;
        TopK = topK;
    }

    public long[] Tokens { get; }

    public IReadOnlyList<IReadOnlyList<TokenLogprob>> TopK { get; }

    public int Length => Tokens.Length;

    /// <summary>The logprob of a token in step's top-k, or null when it is not there.</summary>
    public double? LogprobOf(int step, long token)
    {
        foreach (var e in TopK[step])
            if (e.Token == token) return e.Logprob;
        return null;
    }

    /// <summary>Step's top-k, most likely first (ties by token id).</summary>
    public IReadOnlyList<TokenLogprob> SortedTopK(int step) =>
        TopK[step].OrderByDescending(e => e.Logprob).ThenBy(e => e.Token).ToArray();
}
