using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Models;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The one decode loop (src/Engine/Models/DecodeLoop.cs) driving a decoder whose logits are known in closed form: the
/// checks the offline catalog cannot make (every catalog scenario asks for a valid request with a small vocabulary), each
/// a Stryker.NET mutant of DecodeLoop.cs that survived the catalog (notes/issue-21-mutants.md), written as the bug report
/// it guards.
/// </summary>
public class DecodeLoopMutationTests
{
    /// <summary>
    /// A decoder over a vocabulary of <see cref="Vocab"/> whose next token after t is (t + 3) % Vocab, by a clear margin:
    /// logits[v] = -|v - next| (so log_softmax and the top-k order are known). Records what the loop asked of it.
    /// </summary>
    private sealed class Counter(int vocab = Vocab) : IDecoder
    {
        public ParallelContext Context => ParallelContext.Single;
        public StepSink Sink { get; } = StepSink.Over(null);
        public int Positions = -1;
        public readonly List<(long Token, int Step)> Fed = [];
        public bool FailSteps;

        public void StartSequence(int positions) => Positions = positions;

        public Tensor? Step(long token)
        {
            if (FailSteps) throw new InvalidOperationException($"decode step {Sink.Step} failed");
            Fed.Add((token, Sink.Step));
            return Logits(token, vocab, rows: 1);
        }
    }

    private const int Vocab = 10;

    // [rows, vocab]: every row's logits peak at (after + 3) % vocab, one nat lower per id away
    private static Tensor Logits(long after, int vocab, int rows)
    {
        long next = (after + 3) % vocab;
        var x = new float[rows * vocab];
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < vocab; v++) x[r * vocab + v] = -Math.Abs(v - next) + (r < rows - 1 ? 5f * v : 0f);   // earlier rows peak elsewhere
        return Tensor.FromArray(x, rows, vocab);
    }

    [Fact]
    public void Greedy_decoding_feeds_each_pick_to_the_next_step_and_reports_log_softmax_top_k_of_the_last_row()
    {
        // mutants: the pick taken from another row, the fed token not the pick, the step numbers off, the top-k copied
        // into the wrong slots
        var model = new Counter();
        var g = DecodeLoop.Run(model, promptTokens: 2, () => Logits(1, Vocab, rows: 2), new DecodeRequest(4, 3));
        Assert.Equal(6, model.Positions);                                                   // the prompt and 4 new tokens
        Assert.Equal([4L, 7L, 0L, 3L], g.Tokens);                                           // 1 -> 4 -> 7 -> 0 -> 3
        Assert.Equal([(4L, 1), (7L, 2), (0L, 3)], model.Fed);                               // no step after the last pick
        // log_softmax of -|v - next| over 10 ids: the top-3 are next (0 nats below the peak) and its two neighbours
        for (int i = 0; i < 4; i++)
        {
            long next = g.Tokens[i];
            Assert.Equal(next, g.TopKIds[i, 0]);
            Assert.Equal(new[] { next - 1, next + 1 }.Where(v => v is >= 0 and < Vocab).Take(2).ToHashSet(),
                new[] { g.TopKIds[i, 1], g.TopKIds[i, 2] }.Where(v => Math.Abs(v - next) == 1).ToHashSet());
            double lse = Math.Log(Enumerable.Range(0, Vocab).Sum(v => Math.Exp(-Math.Abs(v - next))));
            Assert.Equal(-lse, g.TopKLogprobs[i, 0], 5);
            Assert.Equal(-1 - lse, g.TopKLogprobs[i, 1], 5);
        }
        Assert.Equal(0, model.Sink.Step);                                                   // back at the prompt's step after the loop
    }

    [Fact]
    public void Teacher_forced_decoding_feeds_the_forced_tokens_and_still_reports_the_models_picks()
    {
        var model = new Counter();
        var g = DecodeLoop.Run(model, 1, () => Logits(1, Vocab, 1), new DecodeRequest(3, 1) { Forced = [8, 2] });
        Assert.Equal([(8L, 1), (2L, 2)], model.Fed);
        Assert.Equal([4L, 1L, 5L], g.Tokens);                                                // 1 -> 4; after 8: 1; after 2: 5
    }

    [Fact]
    public void One_new_token_and_a_top_1_are_a_valid_request_and_run_the_prompt_only()
    {
        // mutants: "max_new_tokens < 1" or "top-k < 1" written "<= 1"; a prompt of one token refused
        var model = new Counter();
        var g = DecodeLoop.Run(model, 1, () => Logits(6, Vocab, 1), new DecodeRequest(1, 1));
        Assert.Equal([9L], g.Tokens);
        Assert.Empty(model.Fed);
        Assert.Equal(2, model.Positions);
    }

    [Fact]
    public void A_request_for_no_tokens_no_top_k_or_an_empty_prompt_is_refused_naming_the_value()
    {
        var model = new Counter();
        Tensor? Prefill() => Logits(1, Vocab, 1);
        Assert.Equal("max_new_tokens must be at least 1, got 0",
            Assert.Throws<ArgumentException>(() => DecodeLoop.Run(model, 1, Prefill, new DecodeRequest(0, 1))).Message);
        Assert.Equal("top-k must be at least 1, got 0",
            Assert.Throws<ArgumentException>(() => DecodeLoop.Run(model, 1, Prefill, new DecodeRequest(2, 0))).Message);
        Assert.Equal("a prompt needs at least one token, got 0",
            Assert.Throws<ArgumentException>(() => DecodeLoop.Run(model, 0, Prefill, new DecodeRequest(2, 1))).Message);
        Assert.Equal(-1, model.Positions);                                                  // refused before any work
        Assert.Equal("teacher forcing needs 3 tokens (one per decode step after the prompt), got 2",
            Assert.Throws<ArgumentException>(() => DecodeLoop.Run(model, 1, Prefill, new DecodeRequest(4, 1) { Forced = [1, 2] })).Message);
    }

    [Fact]
    public void Forced_lists_that_do_not_match_the_sequences_and_steps_that_lose_a_sequence_are_refused()
    {
        // the batched loop (Gemma4's sequences sharing each forward)
        var sinks = new[] { StepSink.Over(null), StepSink.Over(null) };
        IReadOnlyList<Tensor?> Two() => [Logits(1, Vocab, 1), Logits(2, Vocab, 1)];
        var e = Assert.Throws<ArgumentException>(() => DecodeLoop.Run(ParallelContext.Single, sinks, 3, 1, [[5L, 6L]], Two, _ => Two()));
        Assert.Equal("1 forced token lists for 2 sequences", e.Message);
        var lost = Assert.Throws<InvalidOperationException>(() => DecodeLoop.Run(ParallelContext.Single, sinks, 3, 1, null, Two,
            _ => [Logits(1, Vocab, 1)]));
        Assert.Equal("a decode step returned 1 logits for 2 sequences", lost.Message);
        // and two sequences decode independently, each fed its own pick (or its own forced tokens)
        var steps = new List<long[]>();
        var g = DecodeLoop.Run(ParallelContext.Single, sinks, 3, 1, [null, [9L, 9L]], Two,
            next => { steps.Add(next); return [.. next.Select(t => (Tensor?)Logits(t, Vocab, 1))]; });
        Assert.Equal([4L, 7L, 0L], g[0].Tokens);
        Assert.Equal([5L, 2L, 2L], g[1].Tokens);
        Assert.Equal([[4L, 9L], [7L, 9L]], steps);
        Assert.All(sinks, s => Assert.Equal(0, s.Step));
    }

    [Fact]
    public void The_batched_loop_checks_its_request_and_every_forced_list_before_the_prefill()
    {
        // mutants: the batched Run's own request check, the forced lists' check (skipped, or checked without their
        // tokens) removed: Gemma4 calls this overload directly, so the single-sequence check does not guard it
        var sinks = new[] { StepSink.Over(null), StepSink.Over(null) };
        int prefills = 0;
        IReadOnlyList<Tensor?> Two() { prefills++; return [Logits(1, Vocab, 1), Logits(2, Vocab, 1)]; }
        Assert.Equal("max_new_tokens must be at least 1, got 0", Assert.Throws<ArgumentException>(
            () => DecodeLoop.Run(ParallelContext.Single, sinks, 0, 1, null, Two, _ => Two())).Message);
        Assert.Equal("top-k must be at least 1, got 0", Assert.Throws<ArgumentException>(
            () => DecodeLoop.Run(ParallelContext.Single, sinks, 2, 0, null, Two, _ => Two())).Message);
        Assert.Equal("teacher forcing needs 3 tokens (one per decode step after the prompt), got 1", Assert.Throws<ArgumentException>(
            () => DecodeLoop.Run(ParallelContext.Single, sinks, 4, 1, [[5L, 6L, 7L], [5L]], Two, _ => Two())).Message);
        Assert.Equal(0, prefills);
    }

    [Fact]
    public void A_sink_left_at_a_decode_step_by_an_aborted_run_records_the_next_prompt_at_step_0()
    {
        // mutant: the loop does not set step 0 before the prefill, so a prompt's captures after a run that threw
        // mid-decode would be filed under that run's decode step
        var model = new Counter { FailSteps = true };
        Assert.Throws<InvalidOperationException>(() => DecodeLoop.Run(model, 1, () => Logits(1, Vocab, 1), new DecodeRequest(3, 1)));
        Assert.Equal(1, model.Sink.Step);                                                       // the aborted run left its step
        model.FailSteps = false;
        int prefillStep = -1;
        DecodeLoop.Run(model, 1, () => { prefillStep = model.Sink.Step; return Logits(1, Vocab, 1); }, new DecodeRequest(2, 1));
        Assert.Equal(0, prefillStep);
    }

    [Fact]
    public void A_last_stage_without_logits_is_an_error_not_token_zero()
    {
        var model = new Counter();
        var e = Assert.Throws<InvalidOperationException>(() => DecodeLoop.Run(model, 1, () => null, new DecodeRequest(2, 1)));
        Assert.Equal("the last pipeline stage returned no logits", e.Message);
    }

    [Fact]
    public void A_vocabulary_of_2_pow_24_ids_is_refused_because_the_float32_pick_cannot_hold_its_ids()
    {
        // ids are broadcast over the pipeline as float32: id 2^24 + 1 would read back as 2^24
        var model = new Counter(1 << 24);
        var e = Assert.Throws<NotSupportedException>(() => DecodeLoop.Run(model, 1, () => Tensor.Zeros(DType.Float32, 1, 1 << 24), new DecodeRequest(1, 1)));
        Assert.Equal("a vocabulary of 16777216 ids does not fit the float32 pick", e.Message);
        // one id fewer fits, and its largest id is exact
        var last = Tensor.Zeros(DType.Float32, 1, (1 << 24) - 1);
        last.Set(1.0, 0, (1 << 24) - 2);
        Assert.Equal([(long)(1 << 24) - 2], DecodeLoop.Run(model, 1, () => last, new DecodeRequest(1, 1)).Tokens);
    }

    [Fact]
    public void Positions_beyond_max_position_embeddings_or_none_are_refused_and_exactly_the_maximum_is_not()
    {
        DecodeLoop.CheckPositions(8, () => 8);
        DecodeLoop.CheckPositions(9, () => null);
        Assert.Equal("the prompt and the tokens to generate need 9 positions, more than max_position_embeddings 8 (config.json)",
            Assert.Throws<ArgumentException>(() => DecodeLoop.CheckPositions(9, () => 8)).Message);
        Assert.Equal("a sequence needs at least one position, got 0",
            Assert.Throws<ArgumentException>(() => DecodeLoop.CheckPositions(0, () => 8)).Message);
        DecodeLoop.CheckPositions(1, () => 8);
    }
}
