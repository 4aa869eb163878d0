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

    /// <summary>From per-step top-k tables as both the engine and the reference worker return them: [steps, k].</summary>
    public static TokenSequence FromTopK(long[] tokens, long[,] ids, float[,] logprobs)
    {
        int k = ids.GetLength(1);
        var topK = Enumerable.Range(0, tokens.Length)
            .Select(s => (IReadOnlyList<TokenLogprob>)Enumerable.Range(0, k).Select(j => new TokenLogprob(ids[s, j], logprobs[s, j])).ToList())
            .ToList();
        return new TokenSequence(tokens, topK);
    }

    /// <summary>As <see cref="FromTopK(long[], long[,], float[,])"/>, with the float64 oracle's logprobs of the same ids ([steps, k]) when given.</summary>
    public static TokenSequence FromTopK(long[] tokens, long[,] ids, float[,] logprobs, double[,]? oracle)
    {
        var seq = FromTopK(tokens, ids, logprobs);
        if (oracle is null) return seq;
        int k = oracle.GetLength(1);
        return new TokenSequence(seq.Tokens, seq.TopK)
        {
            Oracle = Enumerable.Range(0, oracle.GetLength(0)).Select(s => Enumerable.Range(0, k).Select(j => oracle[s, j]).ToArray()).ToList(),
        };
    }

    public long[] Tokens { get; }

    /// <summary>
    /// The float64 model's logprobs of this side's top-k tokens, per step in the order of <see cref="TopK"/>, teacher-forced
    /// on these tokens (the reference's: the worker runs its float64 twin over prompt + tokens); null: none recorded.
    /// </summary>
    public IReadOnlyList<double[]>? Oracle { get; init; }

    /// <summary>The float64 logprob of a token in step's top-k, or null.</summary>
    public double? OracleOf(int step, long token)
    {
        if (Oracle is null || step >= Oracle.Count) return null;
        for (int j = 0; j < TopK[step].Count; j++)
            if (TopK[step][j].Token == token) return j < Oracle[step].Length ? Oracle[step][j] : null;
        return null;
    }

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
