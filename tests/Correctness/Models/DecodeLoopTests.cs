using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Models.Llama;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// The one decode loop (<see cref="DecodeLoop"/>) on every family's recorded tiny model: teacher forcing with the model's
/// own tokens is the free-running loop bit for bit (so a forced run judges the same engine), forcing other tokens really
/// feeds them, every module is captured at every step with the step's shape, and KV caches are sized from the request.
/// </summary>
public class DecodeLoopTests
{
    private const int NewTokens = 5, TopK = 3;

    private static string Model(string name) => Path.Combine(Fixtures.DefaultDirectory(), "models", name);

    private static Tensor Ids(params long[] ids) => Tensor.FromArray(ids, ids.Length);

    private static readonly long[] Prompt = [1, 17, 42, 99, 5, 23, 61];

    // Every family's free-running and forced generation, the forced tokens handed in.
    public static TheoryData<string> Families => ["llama", "gemma3n", "gemma4", "gemma4-mm", "qwen2-vl"];

    private static Generation Generate(string family, IReadOnlyList<long>? forced, IActivationSink? sink = null, long[]? prompt = null)
    {
        prompt ??= Prompt;
        switch (family)
        {
            case "llama":
            {
                var dir = Model("tiny-llama-fp32");
                using var checkpoint = Checkpoint.Open(dir);
                var model = new LlamaForCausalLM(new CheckpointWeights(checkpoint), HfConfig.Load(Path.Combine(dir, "config.json")).Text,
                    ParallelContext.Single, sink, maxPositions: 4);               // smaller than any request: sized from it
                return model.Generate(Ids(prompt), NewTokens, TopK, forced);
            }
            case "gemma3n":
            {
                var dir = Model("tiny-gemma3n-fp32");
                using var checkpoint = Checkpoint.Open(dir);
                var config = Gemma3nConfig.Load(Path.Combine(dir, "config.json"));
                var model = new Gemma3nModel(new CheckpointWeights(checkpoint), config, ParallelContext.Single, sink);
                return model.Generate(new Gemma3nPrompt(Ids(prompt)), NewTokens, TopK, forced);
            }
            case "gemma4":
            {
                var dir = Model("tiny-gemma4-moe-fp32");
                using var checkpoint = Checkpoint.Open(dir);
                var model = new Gemma4ForCausalLM(new CheckpointWeights(checkpoint), Gemma4ForCausalLM.LoadConfig(dir), ParallelContext.Single, sink);
                return model.Generate(Ids(prompt), NewTokens, TopK, forced);
            }
            case "gemma4-mm":
            {
                var dir = Model("tiny-gemma4-e2b-like-mm-fp32");
                using var checkpoint = Checkpoint.Open(dir);
                var model = new Gemma4ForConditionalGeneration(new CheckpointWeights(checkpoint), HfConfig.Load(Path.Combine(dir, "config.json")),
                    ParallelContext.Single, sink);
                return model.Generate(Ids(prompt), new Gemma4ForConditionalGeneration.TowerOutputs(null, null, null), NewTokens, TopK, forced: forced);
            }
            case "qwen2-vl":
            {
                var dir = Model("tiny-qwen2-vl-fp32");
                using var checkpoint = Checkpoint.Open(dir);
                var config = Qwen2VlConfig.From(HfConfig.Load(Path.Combine(dir, "config.json")));
                var model = new Qwen2VlForConditionalGeneration(new CheckpointWeights(checkpoint), config, ParallelContext.Single, sink);
                return model.Generate(new Qwen2VlInput(prompt), NewTokens, TopK, forced: forced);
            }
            default: throw new ArgumentException(family);
        }
    }

    private static void AssertSameBits(Generation expected, Generation actual, string what)
    {
        Assert.Equal(expected.Tokens, actual.Tokens);
        Assert.Equal(expected.TopKIds.Cast<long>(), actual.TopKIds.Cast<long>());
        var e = expected.TopKLogprobs.Cast<float>().Select(BitConverter.SingleToInt32Bits);
        var a = actual.TopKLogprobs.Cast<float>().Select(BitConverter.SingleToInt32Bits);
        Assert.True(e.SequenceEqual(a), $"{what}: top-k logprobs differ in their bits");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Forcing_the_models_own_tokens_gives_the_free_running_loops_bits(string family)
    {
        var plain = Generate(family, null);
        var forced = Generate(family, plain.Tokens[..(NewTokens - 1)]);
        AssertSameBits(plain, forced, family);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Forced_tokens_are_fed_and_the_models_own_picks_reported(string family)
    {
        var plain = Generate(family, null);
        long[] other = [.. plain.Tokens[..(NewTokens - 1)].Select(t => t == 11 ? 12L : 11L)];   // never the model's pick
        var forced = Generate(family, other);
        // step 0 is the prompt's: forcing cannot change it
        Assert.Equal(plain.TopKIds[0, 0], forced.TopKIds[0, 0]);
        // step 1 saw other[0] after the prompt: the same as a free run on prompt + other[0] (another GEMM shape: close, not bits)
        var extended = Generate(family, null, prompt: [.. Prompt, other[0]]);
        Assert.Equal(extended.Tokens[0], forced.Tokens[1]);
        for (int j = 0; j < TopK; j++)
        {
            Assert.Equal(extended.TopKIds[0, j], forced.TopKIds[1, j]);
            Assert.True(Math.Abs(extended.TopKLogprobs[0, j] - forced.TopKLogprobs[1, j]) < 1e-4,
                $"{family}: step 1's top-{j} logprob {forced.TopKLogprobs[1, j]} is not a free run's on prompt + {other[0]} ({extended.TopKLogprobs[0, j]})");
        }
        // and the fed token is not the reported one: the model's own pick is
        Assert.NotEqual(other[0], forced.Tokens[0]);
    }

    [Fact]
    public void Teacher_forcing_needs_a_token_per_decode_step()
    {
        var e = Assert.Throws<ArgumentException>(() => Generate("llama", [5L, 6L]));
        Assert.Contains("teacher forcing needs 4 tokens", e.Message);
    }

    /// <summary>A sink that wants every module at every step and keeps (module, step, shape).</summary>
    private sealed class StepRecorder : IActivationSink
    {
        public readonly List<(string Module, int Step, int[] Shape)> Records = [];
        public bool Wants(string module) => Wants(module, 0);
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Record(module, worldRank, value, shard, 0);
        public bool Wants(string module, int step) => true;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard, int step)
        {
            lock (Records) Records.Add((module, step, value.ShapeArray));
        }
    }

    /// <summary>A sink of the old kind: only the step-less members.</summary>
    private sealed class PrefillOnlyRecorder : IActivationSink
    {
        public int Count;
        public bool Wants(string module) => true;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Interlocked.Increment(ref Count);
    }

    [Theory]
    [InlineData("llama", "model.layers.1.self_attn", 64)]
    [InlineData("llama", "model.layers.3", 64)]
    [InlineData("gemma4", "model.layers.0.self_attn", -1)]
    [InlineData("qwen2-vl", "model.language_model.layers.0.mlp", -1)]
    public void Every_module_is_captured_at_every_decode_step_with_one_row_after_the_prompt(string family, string module, int hidden)
    {
        var sink = new StepRecorder();
        Generate(family, null, sink);
        var records = sink.Records.Where(r => r.Module == module).ToList();
        Assert.Equal(Enumerable.Range(0, NewTokens), records.Select(r => r.Step));   // prefill 0, decode steps 1..N-1, once each
        Assert.Equal([1, Prompt.Length], records[0].Shape[..2]);                     // [1, T, hidden] at the prompt
        foreach (var r in records.Skip(1)) Assert.Equal([1, 1], r.Shape[..2]);        // [1, 1, hidden] at each decode step
        if (hidden > 0) Assert.All(records, r => Assert.Equal(hidden, r.Shape[^1]));
        // lm_head at the prompt: the last token's logits only (logits_to_keep=1)
        Assert.All(sink.Records.Where(r => r.Module == "lm_head"), r => Assert.Equal(1, r.Shape[^2]));
    }

    [Fact]
    public void A_sink_without_step_members_records_the_prompts_forward_only()
    {
        var old = new PrefillOnlyRecorder();
        Generate("llama", null, old);
        var all = new StepRecorder();
        Generate("llama", null, all);
        Assert.Equal(all.Records.Count(r => r.Step == 0), old.Count);
    }

    // Llama under TP=2 x PP=2 with SP (4 rank threads): every rank's generation, and a sink shared by the ranks.
    private static Generation[] Pipeline(IReadOnlyList<long>? forced, IActivationSink? sink)
    {
        var dir = Model("tiny-llama-fp32");
        var config = HfConfig.Load(Path.Combine(dir, "config.json")).Text;
        return ThreadWorld.Run(4, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, 2, 2, sequenceParallel: true);
            using var checkpoint = Checkpoint.Open(dir);
            return new LlamaForCausalLM(new CheckpointWeights(checkpoint), config, ctx, sink).Generate(Ids(Prompt), NewTokens, TopK, forced);
        });
    }

    [Fact]
    public void Under_tp_sp_and_pp_every_rank_forces_and_captures_each_step()
    {
        var plain = Pipeline(null, null);
        var sink = new StepRecorder();
        var forced = Pipeline(plain[0].Tokens[..(NewTokens - 1)], sink);
        for (int r = 0; r < 4; r++)
        {
            AssertSameBits(plain[0], plain[r], $"rank {r}'s free run");
            AssertSameBits(plain[0], forced[r], $"rank {r}'s forced run");
        }
        // layer 0 lives on stage 0 (world ranks 0, 1), layer 3 on stage 1 (ranks 2, 3): each rank records each step once
        foreach (var (module, count) in new[] { ("model.layers.0.self_attn", 2), ("model.layers.3.mlp", 2), ("lm_head", 2) })
        {
            var steps = sink.Records.Where(x => x.Module == module).GroupBy(x => x.Step).OrderBy(g => g.Key).ToList();
            Assert.Equal(Enumerable.Range(0, NewTokens), steps.Select(g => g.Key));
            Assert.All(steps, g => Assert.Equal(count, g.Count()));
        }
    }

    [Fact]
    public void Kv_caches_are_sized_from_the_request_and_bounded_by_max_position_embeddings()
    {
        var dir = Model("tiny-llama-fp32");
        using var checkpoint = Checkpoint.Open(dir);
        var config = HfConfig.Load(Path.Combine(dir, "config.json")).Text;      // max_position_embeddings 256
        var weights = new CheckpointWeights(checkpoint);
        var prompt = Tensor.FromArray(Enumerable.Range(0, 240).Select(i => (long)(3 + i * 7 % 120)).ToArray(), 240);
        var small = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 8).Generate(prompt, 16, 2);   // 256 positions
        var large = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 300).Generate(prompt, 16, 2);
        AssertSameBits(large, small, "a cache grown for the request");
        var e = Assert.Throws<ArgumentException>(() => new LlamaForCausalLM(weights, config, ParallelContext.Single).Generate(prompt, 17, 2));
        Assert.Contains("257 positions, more than max_position_embeddings 256", e.Message);
    }

    /// <summary>
    /// Issue 22 seed (d) with an image: compare's captured Gemma3n prefill of a 261-token prompt (boi, 256 image tokens, eoi,
    /// 3 words) ran before any StartSequence and failed "KV cache of 256 positions cannot take 261 more after 0" (the
    /// default MaxPositions). A fresh sequence's forward now sizes the caches for its prompt: the logits are those of a model
    /// built with room for it, bit for bit, and past max_position_embeddings it is still a named error.
    /// </summary>
    [Fact]
    public void A_gemma3n_prompt_longer_than_the_default_cache_is_sized_by_its_own_forward()
    {
        var dir = Model("tiny-gemma3n-fp32");
        using var checkpoint = Checkpoint.Open(dir);
        var config = Gemma3nConfig.Load(Path.Combine(dir, "config.json"));      // max_position_embeddings 96
        var weights = new CheckpointWeights(checkpoint);
        var prompt = new Gemma3nPrompt(Tensor.FromArray(Enumerable.Range(0, 40).Select(i => (long)(3 + i * 7 % 200)).ToArray(), 40));
        var small = new Gemma3nModel(weights, config, ParallelContext.Single, options: new Gemma3nOptions { MaxPositions = 8 });
        var roomy = new Gemma3nModel(weights, config, ParallelContext.Single, options: new Gemma3nOptions { MaxPositions = 64 });
        var (a, b) = (small.Forward(prompt), roomy.Forward(prompt));             // [40, vocab] each
        Assert.Equal(40, small.CacheCapacity);
        Assert.True(b.ToFloatArray().Select(BitConverter.SingleToInt32Bits).SequenceEqual(a.ToFloatArray().Select(BitConverter.SingleToInt32Bits)),
            "the prefill through grown caches differs from one through caches built large enough");
        var tooLong = new Gemma3nPrompt(Tensor.FromArray(Enumerable.Range(0, 97).Select(i => (long)(3 + i % 200)).ToArray(), 97));
        var e = Assert.Throws<ArgumentException>(() => new Gemma3nModel(weights, config, ParallelContext.Single, options: new Gemma3nOptions { MaxPositions = 8 }).Forward(tooLong));
        Assert.Contains("more than max_position_embeddings 96", e.Message);
    }
}
