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

    /// <summary>
    /// From a model-specific generate op's reply tensors: tokens [steps], topk_ids [steps, k], topk_logprobs [steps, k],
    /// and oracle_topk_logprobs [steps, k] (the float64 model teacher-forced on the same tokens) when the op ran the oracle.
    /// A shape that does not fit is an <see cref="ArgumentException"/> naming the tensor.
    /// </summary>
    public static TokenSequence FromReply(IReadOnlyDictionary<string, Harness.Engine.Tensors.Tensor> reply)
    {
        Harness.Engine.Tensors.Tensor Need(string name) => reply.TryGetValue(name, out var t) ? t
            : throw new ArgumentException($"the reference returned no '{name}' (it returned {string.Join(", ", reply.Keys)})");
        var tokens = Need("tokens").ToInt64Array();
        var ids = Need("topk_ids");
        if (ids.Shape.Length != 2 || ids.Shape[0] != tokens.Length)
            throw new ArgumentException($"the reference's topk_ids is {Harness.Engine.Tensors.Shape.Format(ids.Shape)} for {tokens.Length} tokens: expected [steps, k]");
        int steps = ids.Shape[0], k = ids.Shape[1];
        T[,] Matrix<T>(Harness.Engine.Tensors.Tensor t, Func<Harness.Engine.Tensors.Tensor, T[]> read, string name)
        {
            if (!t.Shape.SequenceEqual(ids.Shape))
                throw new ArgumentException($"the reference's {name} is {Harness.Engine.Tensors.Shape.Format(t.Shape)}, expected [{steps}, {k}] as topk_ids");
            var flat = read(t);
            var m = new T[steps, k];
            for (int i = 0; i < flat.Length; i++) m[i / k, i % k] = flat[i];
            return m;
        }
        var oracle = reply.TryGetValue("oracle_topk_logprobs", out var o) ? Matrix(o, x => x.ToDoubleArray(), "oracle_topk_logprobs") : null;
        return FromTopK(tokens, Matrix(ids, x => x.ToInt64Array(), "topk_ids"), Matrix(Need("topk_logprobs"), x => x.ToFloatArray(), "topk_logprobs"), oracle);
    }

    /// <summary>The names <see cref="FromReply"/> reads (not module captures).</summary>
    public static readonly string[] ReplyNames = ["tokens", "topk_ids", "topk_logprobs", "oracle_topk_logprobs"];

    public long[] Tokens { get; }

    /// <summary>
    /// The float64 model's logprobs of this side's top-k tokens, per step in the order of <see cref="TopK"/>, teacher-forced
    /// on these tokens (the reference's: the worker runs its float64 twin over prompt + tokens); null: none recorded.
    /// </summary>
    public IReadOnlyList<double[]>? Oracle { get; init; }

    /// <summary>
    /// The float64 model's logprob of ANY token at a step, where the reference captured the oracle's full logits
    /// (<see cref="WithOracleLogits"/>); null: not known for that step. It lets a divergence be judged by the float64 model
    /// when the engine's token is outside the reference's top-k: at a real vocabulary (262144) the bf16 top-k of a flat
    /// distribution is noise, and membership in it decides nothing.
    /// </summary>
    public Func<int, long, double?>? OracleAny { get; init; }

    /// <summary>The float64 logprob of a token in step's top-k (or of any token, with <see cref="OracleAny"/>), or null.</summary>
    public double? OracleOf(int step, long token)
    {
        if (Oracle is null || step >= Oracle.Count) return null;
        for (int j = 0; j < TopK[step].Count; j++)
            if (TopK[step][j].Token == token) return j < Oracle[step].Length ? Oracle[step][j] : null;
        return OracleAny?.Invoke(step, token);
    }

    /// <summary>
    /// This sequence with <see cref="OracleAny"/> read from the reference's captures: the float64 oracle's logits module
    /// ("oracle.logits", else "oracle.lm_head") at the prefill's last row for step 0, and "oracle.step&lt;s&gt;.logits" (its
    /// last row) for decode step s where the steps were captured. log_softmax in float64, one step at a time, on first use.
    /// Unchanged when the sequence has no oracle logprobs or the captures hold no oracle logits.
    /// </summary>
    public TokenSequence WithOracleLogits(IReadOnlyDictionary<string, Harness.Engine.Tensors.Tensor> captures)
    {
        if (Oracle is null) return this;
        string? module = new[] { "logits", "lm_head" }.FirstOrDefault(m => captures.ContainsKey(LayerComparison.OraclePrefix + m));
        if (module is null) return this;
        var rows = new Dictionary<int, double[]?>();
        double[]? Row(int step)
        {
            lock (rows)
            {
                if (rows.TryGetValue(step, out var r)) return r;
                string name = LayerComparison.OraclePrefix + DecodeSteps.Name(step, module);
                r = captures.TryGetValue(name, out var t) && t.Rank >= 1 ? LogSoftmax(LastRow(t)) : null;
                rows[step] = r;
                return r;
            }
        }
        return new TokenSequence(Tokens, TopK)
        {
            Oracle = Oracle,
            OracleAny = (step, token) => Row(step) is { } lp && token >= 0 && token < lp.Length ? lp[token] : null,
        };

        static double[] LastRow(Harness.Engine.Tensors.Tensor t)
        {
            int v = t.Shape[^1];
            var all = t.Contiguous().Reshape(checked((int)(t.ElementCount / v)), v);
            return all.Select(0, all.Shape[0] - 1).ToDoubleArray();
        }

        static double[] LogSoftmax(double[] x)
        {
            double max = double.NegativeInfinity;
            foreach (double a in x) max = Math.Max(max, a);
            double sum = 0;
            foreach (double a in x) sum += Math.Exp(a - max);
            double lse = max + Math.Log(sum);
            var y = new double[x.Length];
            for (int i = 0; i < x.Length; i++) y[i] = x[i] - lse;
            return y;
        }
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
