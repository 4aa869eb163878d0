using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models;

/// <summary>
/// The result of greedy decoding on a rank (the same on every rank): the model's own pick at each step and the top-k of
/// log_softmax(float32 logits) it was picked from. Under teacher forcing (<see cref="DecodeRequest.Forced"/>) the tokens
/// are still the model's own argmax, not the forced ones it was fed.
/// </summary>
public sealed record Generation(long[] Tokens, long[,] TopKIds, float[,] TopKLogprobs);

/// <summary>What to generate: <see cref="MaxNewTokens"/> greedy tokens with the top <see cref="TopK"/> log-probabilities at each.</summary>
public sealed record DecodeRequest(int MaxNewTokens, int TopK)
{
    /// <summary>
    /// Teacher forcing: decode step i + 1 is fed <c>Forced[i]</c> instead of the model's pick at step i, while every
    /// step still reports the model's own argmax and top-k. Needs at least MaxNewTokens - 1 tokens (the last pick is never
    /// fed); null: free-running greedy decoding.
    /// </summary>
    public IReadOnlyList<long>? Forced { get; init; }

    /// <summary>The prompt's logits_to_keep: 1 (the default, as HF's generate) runs lm_head on the last token only; 0 on
    /// every token (a prefill whose lm_head is captured whole).</summary>
    public int PrefillLogitsToKeep { get; init; } = 1;
}

/// <summary>
/// A text decoder the one decode loop drives on one rank: a sequence's KV caches, one-token decode steps, and the
/// step-scoped sink its modules record through. The prompt's forward is family-specific (ids, embeds, soft tokens,
/// pixel values) and is handed to <see cref="DecodeLoop.Run"/> as a function.
/// </summary>
public interface IDecoder
{
    /// <summary>The layout (the last pipeline stage picks; the pick is broadcast over the pipeline group).</summary>
    ParallelContext Context { get; }

    /// <summary>The sink the model's modules record through; the loop sets its step.</summary>
    StepSink Sink { get; }

    /// <summary>
    /// Forgets the sequence (KV caches, position) and makes room for <paramref name="positions"/> positions (the prompt and
    /// every token to generate): caches sized from the request. More than the config's max_position_embeddings is an
    /// <see cref="ArgumentException"/> naming both, before any work.
    /// </summary>
    void StartSequence(int positions);

    /// <summary>One decode step: <paramref name="token"/> at the next position. Logits [rows, vocab] (the last row is the
    /// next token's) on the last pipeline stage, null on the others.</summary>
    Tensor? Step(long token);
}

/// <summary>
/// The one greedy decode loop of every family (HF's greedy <c>generate</c>):
/// <code>
/// reset(prompt + max_new_tokens positions)
/// logits = prefill()                           # step 0: the prompt (callers keep the last row: logits_to_keep=1)
/// for i in 0 .. max_new_tokens-1:
///     logprobs = log_softmax(logits[-1].float()); ids, lps = topk(logprobs, k)
///     tokens[i] = ids[0]
///     if i + 1 &lt; max_new_tokens: logits = step(forced[i] if forced else tokens[i])   # decode step i + 1
/// </code>
/// The model's <see cref="StepSink"/> is told the step before each forward (0 = prefill, 1.. = decode steps), so a sink
/// that wants decode steps captures every module at every step ([1, 1, hidden] rows). Under PP the last stage picks and
/// broadcasts the pick over the pipeline group; under TP every rank computes the same pick.
/// </summary>
public static class DecodeLoop
{
    /// <summary>Greedy decoding of one sequence after its prompt (<paramref name="promptTokens"/> positions).</summary>
    /// <param name="prefill">The prompt's forward on a reset model: logits [rows, vocab] on the last stage (the last row is
    /// used), null on other stages.</param>
    public static Generation Run(IDecoder model, int promptTokens, Func<Tensor?> prefill, DecodeRequest request)
    {
        Check(request);
        if (promptTokens < 1) throw new ArgumentException($"a prompt needs at least one token, got {promptTokens}");
        model.StartSequence(promptTokens + request.MaxNewTokens);
        return Run(model.Context, [model.Sink], request.MaxNewTokens, request.TopK, [request.Forced],
            () => [prefill()], next => [model.Step(next[0])])[0];
    }

    /// <summary>
    /// Greedy decoding of several sequences that share each forward (rows stacked; Gemma4): <paramref name="prefill"/>
    /// returns each sequence's logits, <paramref name="step"/> takes one token per sequence. The caller has reset and sized
    /// the sequences.
    /// </summary>
    public static IReadOnlyList<Generation> Run(ParallelContext ctx, IReadOnlyList<StepSink> sinks, int maxNewTokens, int topK,
        IReadOnlyList<IReadOnlyList<long>?>? forced, Func<IReadOnlyList<Tensor?>> prefill, Func<long[], IReadOnlyList<Tensor?>> step)
    {
        Check(new DecodeRequest(maxNewTokens, topK));
        foreach (var f in forced ?? []) Check(new DecodeRequest(maxNewTokens, topK) { Forced = f });
        SetStep(sinks, 0);
        var logits = prefill();
        int n = logits.Count;
        if (forced is not null && forced.Count != n) throw new ArgumentException($"{forced.Count} forced token lists for {n} sequences");
        var tokens = new long[n][];
        var ids = new long[n][,];
        var lps = new float[n][,];
        for (int s = 0; s < n; s++) { tokens[s] = new long[maxNewTokens]; ids[s] = new long[maxNewTokens, topK]; lps[s] = new float[maxNewTokens, topK]; }
        for (int i = 0; i < maxNewTokens; i++)
        {
            var next = new long[n];
            for (int s = 0; s < n; s++)
            {
                var p = Pick(ctx, logits[s], topK);                                        // [token, ids..., logprobs...]
                tokens[s][i] = (long)p[0];
                for (int j = 0; j < topK; j++) { ids[s][i, j] = (long)p[1 + j]; lps[s][i, j] = p[1 + topK + j]; }
                if (i + 1 < maxNewTokens) next[s] = forced?[s] is { } f ? f[i] : tokens[s][i];   // fed to decode step i + 1
            }
            if (i + 1 == maxNewTokens) break;
            SetStep(sinks, i + 1);
            logits = step(next);
            if (logits.Count != n) throw new InvalidOperationException($"a decode step returned {logits.Count} logits for {n} sequences");
        }
        SetStep(sinks, 0);
        return Enumerable.Range(0, n).Select(s => new Generation(tokens[s], ids[s], lps[s])).ToList();
    }

    /// <summary>
    /// The bound every family's <see cref="IDecoder.StartSequence"/> checks: <paramref name="positions"/> (prompt and new
    /// tokens) within max_position_embeddings when the config has one. The read is a check on the request, which changes no
    /// output, so it is made under <see cref="Config.ConfigReads.Validate"/> (the config-field mutation check does not count it).
    /// </summary>
    public static void CheckPositions(int positions, Func<int?> maxPositionEmbeddings)
    {
        int? max = null;
        Config.ConfigReads.Validate(() => max = maxPositionEmbeddings());
        if (positions < 1) throw new ArgumentException($"a sequence needs at least one position, got {positions}");
        if (max is int m && positions > m)
            throw new ArgumentException($"the prompt and the tokens to generate need {positions} positions, more than max_position_embeddings {m} (config.json)");
    }

    private static void SetStep(IReadOnlyList<StepSink> sinks, int step)
    {
        foreach (var s in sinks) s.Step = step;
    }

    private static void Check(DecodeRequest r)
    {
        if (r.MaxNewTokens < 1) throw new ArgumentException($"max_new_tokens must be at least 1, got {r.MaxNewTokens}");
        if (r.TopK < 1) throw new ArgumentException($"top-k must be at least 1, got {r.TopK}");
        if (r.Forced is { } f && f.Count < r.MaxNewTokens - 1)
            throw new ArgumentException($"teacher forcing needs {r.MaxNewTokens - 1} tokens (one per decode step after the prompt), got {f.Count}");
    }

    // The last row's log_softmax top-k on the last stage (the pick is ids[0]), broadcast over the pipeline group:
    // [token, ids..., logprobs...] as float32 (ids below 2^24 are exact).
    private static float[] Pick(ParallelContext ctx, Tensor? logits, int topK)
    {
        var pick = Tensor.Zeros(DType.Float32, 1 + 2 * topK);
        if (ctx.IsLastStage)
        {
            if (logits is null) throw new InvalidOperationException("the last pipeline stage returned no logits");
            var last = logits.Select(0, logits.Shape[0] - 1).To(DType.Float32);           // [vocab]
            if (last.Shape[0] >= 1 << 24) throw new NotSupportedException($"a vocabulary of {last.Shape[0]} ids does not fit the float32 pick");
            var (values, indices) = TopK.Forward(Softmax.LogSoftmax(last, -1), topK);
            var vi = indices.ToInt64Array();
            var vv = values.ToFloatArray();
            pick.Set(vi[0], 0);
            for (int j = 0; j < topK; j++) { pick.Set(vi[j], 1 + j); pick.Set(vv[j], 1 + topK + j); }
        }
        if (ctx.PpSize > 1) pick = ctx.Pp.Broadcast(pick, ctx.PpSize - 1);
        return pick.ToFloatArray();
    }
}
