using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Models;
using Harness.Engine.Models.Llama;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// LlamaForCausalLM's contract at its edges: what it refuses (a layout, a missing lm_head, bad inputs, logits_to_keep out
/// of range), how it sizes its caches, and what logits_to_keep and inputs_embeds return. The offline catalog feeds every
/// scenario a valid prompt to a model built for it, so these Stryker.NET mutants of
/// src/Engine/Models/Llama/LlamaForCausalLM.cs survived it (notes/issue-21-mutllama.md); each test is the bug report of one.
/// fp32 and bf16 where the mutant acts on values.
/// </summary>
public class LlamaModelMutationTests
{
    private const int Hidden = 64, Vocab = 96;

    private static TextConfig Config(int layers = 2, bool tied = false, string rope = """{"rope_theta": 20000.0, "rope_type": "default"}""") => HfConfig.Parse($$"""
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": {{Hidden}}, "intermediate_size": 160,
         "num_hidden_layers": {{layers}}, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": {{Vocab}},
         "rms_norm_eps": 1e-5, "tie_word_embeddings": {{(tied ? "true" : "false")}}, "hidden_act": "silu", "max_position_embeddings": 128,
         "rope_parameters": {{rope}} }
        """, "mm/config.json").Text;

    private static Dictionary<string, Tensor> Weights(TextConfig config, DType dt)
    {
        var weights = new Dictionary<string, Tensor>();
        ulong seed = 40;
        foreach (var e in LlamaTensors.Expected(config).Tensors.Where(e => !e.Optional || !config.TieWordEmbeddings))
            weights[e.Name] = Tensor.Normal(DType.Float32, seed++, 0f, 0.1f, e.Shape).To(dt);
        return weights;
    }

    private static LlamaForCausalLM Model(DType dt, int maxPositions = 32, TextConfig? config = null)
    {
        config ??= Config();
        return new LlamaForCausalLM(new DictionaryWeights(Weights(config, dt)), config, ParallelContext.Single, maxPositions: maxPositions);
    }

    private static Tensor Ids(params long[] ids) => Tensor.FromArray(ids, ids.Length);

    [Fact]
    public void A_layer_count_the_pipeline_stages_cannot_split_is_refused_naming_both()
    {
        var config = Config(layers: 4);
        var ctx = new ThreadWorld(3).LayoutFor(0, 1, 3);
        var e = Assert.Throws<ArgumentException>(() => new LlamaForCausalLM(new DictionaryWeights(Weights(config, DType.Float32)), config, ctx));
        Assert.Equal("4 layers cannot be split evenly over 3 pipeline stages", e.Message);
    }

    [Fact]
    public void An_untied_model_without_lm_head_is_refused_and_a_tied_one_reads_the_embedding()
    {
        var untied = Config();
        var weights = Weights(untied, DType.Float32);
        weights.Remove("lm_head.weight");
        var e = Assert.Throws<KeyNotFoundException>(() => new LlamaForCausalLM(new DictionaryWeights(weights), untied, ParallelContext.Single));
        Assert.Equal("lm_head.weight is missing and tie_word_embeddings is false", e.Message);

        // tied: the logits are the final hidden state times the embedding table; a model given that table as lm_head agrees
        var tied = new LlamaForCausalLM(new DictionaryWeights(weights), untied with { TieWordEmbeddings = true }, ParallelContext.Single, maxPositions: 8);
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"];
        var explicitHead = new LlamaForCausalLM(new DictionaryWeights(weights), untied, ParallelContext.Single, maxPositions: 8);
        Assert.Equal(explicitHead.Forward(Ids(3, 9, 4), 3)!.ToFloatArray(), tied.Forward(Ids(3, 9, 4), 3)!.ToFloatArray());
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void A_config_without_hidden_act_runs_silu_as_hfs_llama_config_defaults(DType dt)
    {
        // LlamaConfig(hidden_act="silu"): every catalog config writes hidden_act, so only this sees the default
        var config = Config();
        var weights = new DictionaryWeights(Weights(config, dt));
        var silu = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 8).Forward(Ids(5, 17, 2), 3)!;
        var unset = new LlamaForCausalLM(weights, config with { HiddenAct = null }, ParallelContext.Single, maxPositions: 8).Forward(Ids(5, 17, 2), 3)!;
        Assert.Equal(silu.ToFloatArray(), unset.ToFloatArray());
        var gelu = new LlamaForCausalLM(weights, config with { HiddenAct = "gelu_pytorch_tanh" }, ParallelContext.Single, maxPositions: 8).Forward(Ids(5, 17, 2), 3)!;
        Assert.NotEqual(silu.ToFloatArray(), gelu.ToFloatArray());                       // the activation is observable here
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Logits_to_keep_returns_the_last_rows_of_the_full_logits_and_refuses_more_rows_than_tokens(DType dt)
    {
        var full = Model(dt).Forward(Ids(5, 17, 2, 60), 4)!;                               // [4, vocab]
        Assert.Equal([4, Vocab], full.ShapeArray);
        foreach (int keep in new[] { 1, 3, 4 })
        {
            var kept = Model(dt).Forward(Ids(5, 17, 2, 60), 4, logitsToKeep: keep)!;
            Assert.Equal([keep, Vocab], kept.ShapeArray);
            Assert.Equal(full.Narrow(0, 4 - keep, keep).ToFloatArray(), kept.ToFloatArray());
        }
        var model = Model(dt);
        foreach (int keep in new[] { -1, 5 })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(Ids(5, 17, 2, 60), 4, logitsToKeep: keep));
            Assert.StartsWith($"logits_to_keep {keep} must be 0 (all) or 1..4 (the tokens of this step)", e.Message);
        }
        Assert.Equal(0, model.Position);                                                  // refused before the position moved
    }

    [Fact]
    public void The_first_stage_without_input_is_refused()
    {
        var e = Assert.Throws<ArgumentNullException>(() => Model(DType.Float32).Forward(null, 2));
        Assert.StartsWith("the first pipeline stage needs the input", e.Message);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Prompt_embeddings_that_are_the_tables_rows_give_the_logits_of_the_ids_and_a_wrong_shape_is_refused(DType dt)
    {
        var config = Config();
        var weights = Weights(config, dt);
        LlamaForCausalLM Fresh() => new(new DictionaryWeights(weights), config, ParallelContext.Single, maxPositions: 16);
        var table = weights["model.embed_tokens.weight"];
        long[] ids = [7, 0, 95, 31];
        var embeds = Tensor.Zeros(dt, ids.Length, Hidden);
        for (int i = 0; i < ids.Length; i++) embeds.Narrow(0, i, 1).CopyFrom(table.Narrow(0, (int)ids[i], 1));
        Assert.Equal(Fresh().Forward(Ids(ids), 4)!.ToFloatArray(), Fresh().Forward(embeds, 4)!.ToFloatArray());
        foreach (var bad in new[] { Tensor.Zeros(dt, 3, Hidden), Tensor.Zeros(dt, 4, Hidden - 1), Tensor.Zeros(dt, 4 * Hidden) })
        {
            var e = Assert.Throws<ArgumentException>(() => Fresh().Forward(bad, 4));
            Assert.Equal($"inputs_embeds must be [4, {Hidden}], got {Shape.Format(bad.Shape)}", e.Message);
        }
    }

    [Theory]
    [InlineData(-1L, 0)]
    [InlineData(Vocab, 2)]
    [InlineData(Vocab + 1000L, 1)]
    public void An_input_id_outside_the_vocabulary_is_refused_naming_it_and_its_position(long id, int position)
    {
        var ids = new long[] { 4, 8, 15 };
        ids[position] = id;
        var e = Assert.Throws<ArgumentException>(() => Model(DType.Float32).Forward(Ids(ids), 3));
        Assert.Contains($"input id {id} at position {position} is outside the vocabulary [0, {Vocab})", e.Message);
    }

    [Fact]
    public void The_last_id_of_the_vocabulary_is_a_valid_input()
    {
        var logits = Model(DType.Float32).Forward(Ids(Vocab - 1, 0), 2)!;
        Assert.All(logits.ToFloatArray(), v => Assert.True(float.IsFinite(v)));
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Start_sequence_grows_the_caches_past_the_constructors_size_and_decodes_as_a_model_built_that_large(DType dt)
    {
        // mutants: the growth condition inverted or off by one (the cache then overflows or is reallocated needlessly)
        var config = Config();
        var weights = Weights(config, dt);
        var small = new LlamaForCausalLM(new DictionaryWeights(weights), config, ParallelContext.Single, maxPositions: 4);
        var large = new LlamaForCausalLM(new DictionaryWeights(weights), config, ParallelContext.Single, maxPositions: 40);
        Assert.Equal(5, small.CacheCapacity);                                             // positions + tp (SP padding rows)
        small.StartSequence(4);
        Assert.Equal(5, small.CacheCapacity);                                             // holds enough: not reallocated
        small.StartSequence(5);                                                           // one position more than it holds
        Assert.Equal(6, small.CacheCapacity);
        small.StartSequence(40);
        Assert.Equal(41, small.CacheCapacity);
        var prompt = Ids(Enumerable.Range(0, 30).Select(i => (long)(i * 7 % Vocab)).ToArray());
        var a = small.Generate(prompt, 10, 3);
        var b = large.Generate(prompt, 10, 3);
        Assert.Equal(b.Tokens, a.Tokens);
        Assert.Equal(b.TopKLogprobs.Cast<float>(), a.TopKLogprobs.Cast<float>());
        Assert.Equal(39, small.Position);                                                // the last pick is not fed back
    }

    [Fact]
    public void Rewinding_to_a_position_decodes_the_rest_as_the_first_time()
    {
        // Reset(position) / Rewind: the caches and the position go back to the position, the weights stay
        var model = Model(DType.Float32);
        model.Forward(Ids(5, 17, 2), 3);
        var first = model.Forward(Ids(60, 11), 2)!.ToFloatArray();
        model.Rewind(3);
        Assert.Equal(3, model.Position);
        Assert.Equal(first, model.Forward(Ids(60, 11), 2)!.ToFloatArray());
        model.Reset(3);
        Assert.Equal(first, model.Forward(Ids(60, 11), 2)!.ToFloatArray());
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void The_decode_position_fault_rotates_a_steps_token_one_position_further_as_linear_rope_scaling_by_one_half_does(DType dt)
    {
        // LlamaOptions.DecodePositionOffset is *added* to a decode step's rotary position (the catalog's decode-only fault
        // sets 1). Prompt [a] at position 0, then one step b at cache position 1: with offset 1, b is rotated at 2. A clean
        // model with linear RoPE scaling of factor 0.5 rotates position p at 2p (inv_freq / 0.5: a power of two, exact),
        // so a at 0 and b at 2: the same angles, the same logits. The fault subtracting its offset (b at 0) or left out
        // (b at 1) gives other logits.
        var config = Config();
        var weights = new DictionaryWeights(Weights(config, dt));
        var faulty = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 8,
            options: new LlamaOptions { DecodePositionOffset = 1 });
        var halfScaled = new LlamaForCausalLM(weights, Config(rope: """{"rope_theta": 20000.0, "rope_type": "linear", "factor": 0.5}"""),
            ParallelContext.Single, maxPositions: 8);
        var clean = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 8);
        float[] StepAfterPrompt(LlamaForCausalLM m)
        {
            m.Forward(Ids(5), 1);
            return m.Step(17)!.ToFloatArray();
        }
        var want = StepAfterPrompt(halfScaled);
        Assert.Equal(want, StepAfterPrompt(faulty));
        Assert.NotEqual(want, StepAfterPrompt(clean));                                   // the offset is observable here
        Assert.Equal(2, faulty.Position);                                                // the cache position is not shifted
    }

    [Fact]
    public void A_second_generation_on_one_model_starts_a_new_sequence_without_an_explicit_reset()
    {
        // DecodeLoop starts every generation with StartSequence, which forgets the last sequence (its KV cache and position):
        // a model reused without Reset (the bench, a teacher-forced re-run) decodes the second prompt as a fresh model does
        var config = Config();
        var weights = new DictionaryWeights(Weights(config, DType.Float32));
        var prompt = Ids(5, 17, 2, 60);
        var fresh = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 24).Generate(prompt, 5, 3);
        var reused = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 24);
        reused.Generate(Ids(3, 8, 2), 7, 3);
        var second = reused.Generate(prompt, 5, 3);
        Assert.Equal(fresh.Tokens, second.Tokens);
        Assert.Equal(fresh.TopKLogprobs.Cast<float>(), second.TopKLogprobs.Cast<float>());
        Assert.Equal(8, reused.Position);                                                 // 4 prompt tokens + 4 fed back
    }

    [Fact]
    public void A_residual_that_reaches_a_pipeline_stage_sliced_is_refused_naming_both_shapes_and_the_rows_the_rank_needs()
    {
        // TP=2 x PP=2 with SP, 7 tokens padded to 8 (4 per rank). With the SpPpResidualSliced fault stage 0 sends the
        // all-gathered hidden [8, 64] but only its rank's residual rows [4, 64]; stage 1's TP rank 1 (world rank 3) cannot
        // take rows [4, 8) of them and says so at its first layer. Its TP peer (world rank 2) is released by that failure:
        // a released rank is not where the run broke, so its error is left unattributed (no module named).
        var config = Config();
        var weights = new DictionaryWeights(Weights(config, DType.Float32));
        var e = Assert.Throws<RankFailedException>(() => ThreadWorld.Run(4, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, 2, 2, sequenceParallel: true);
            var model = new LlamaForCausalLM(weights, config, ctx, maxPositions: 16, options: new LlamaOptions { SpPpResidualSliced = true });
            return model.Forward(ctx.IsFirstStage ? Ids(5, 17, 2, 60, 11, 3, 9) : null, 7);
        }, TimeSpan.FromSeconds(60)));
        var failed = Assert.IsType<ModuleFailedException>(e.ErrorOf(3));
        Assert.Equal(("model.layers.1", 3), (failed.Module, failed.WorldRank));
        // the shapes as received (hidden whole, residual sliced): before, hidden was named after its own narrowing ([4, 64])
        Assert.StartsWith($"model.layers.1 (rank 3) failed: the (hidden, residual) received from pipeline stage 0 are [8, {Hidden}] and [4, {Hidden}]; this stage needs all 8 tokens to take rows [4, 8): ", failed.Message);
        var released = Assert.IsType<CollectiveException>(e.ErrorOf(2));
        Assert.Equal(CollectiveFailure.PeerFailed, released.Failure);
    }

    [Fact]
    public void An_embedding_table_that_is_not_a_matrix_is_refused_naming_the_tensor()
    {
        // a checkpoint read without the validator (the model is a public API): model.embed_tokens.weight flattened to 1-D
        var config = Config();
        var weights = Weights(config, DType.Float32);
        weights["model.embed_tokens.weight"] = Tensor.Zeros(DType.Float32, Vocab * Hidden);
        var e = Assert.Throws<ArgumentException>(() => new LlamaForCausalLM(new DictionaryWeights(weights), config, ParallelContext.Single, maxPositions: 8));
        Assert.Equal($"model.embed_tokens.weight: an embedding table is [vocab, hidden], got shape [{Vocab * Hidden}]", e.Message);
    }

    [Fact]
    public void Generate_with_forced_tokens_feeds_them_as_a_teacher_forced_request_does()
    {
        // Generate(prompt, n, k, forced): the overload the harness's teacher-forced runs call must pass the forced tokens on
        // (a request without them decodes free-running: step 1 then follows the model's own pick)
        var config = Config();
        var weights = new DictionaryWeights(Weights(config, DType.Float32));
        LlamaForCausalLM Fresh() => new(weights, config, ParallelContext.Single, maxPositions: 16);
        var prompt = Ids(5, 17, 2, 60);
        var free = Fresh().Generate(prompt, 3, 3);
        long[] forced = [(free.Tokens[0] + 1) % Vocab, (free.Tokens[0] + 2) % Vocab];     // not the model's picks
        var viaOverload = Fresh().Generate(prompt, 3, 3, forced);
        var viaRequest = Fresh().Generate(prompt, new DecodeRequest(3, 3) { Forced = forced });
        Assert.Equal(viaRequest.Tokens, viaOverload.Tokens);
        Assert.Equal(viaRequest.TopKLogprobs.Cast<float>(), viaOverload.TopKLogprobs.Cast<float>());
        Assert.Equal(free.Tokens[0], viaOverload.Tokens[0]);                              // step 0 sees the prompt only
        Assert.NotEqual(free.TopKLogprobs.Cast<float>().Skip(3).Take(3), viaOverload.TopKLogprobs.Cast<float>().Skip(3).Take(3));
    }

    [Fact]
    public void Starting_a_sequence_longer_than_max_position_embeddings_is_refused_before_the_caches_grow()
    {
        // the config says 128 positions: a request for 129 is an error naming the field, and the caches keep their size
        var model = Model(DType.Float32, maxPositions: 8);
        model.StartSequence(128);
        Assert.Equal(129, model.CacheCapacity);
        var e = Assert.Throws<ArgumentException>(() => model.StartSequence(129));
        Assert.Equal("the prompt and the tokens to generate need 129 positions, more than max_position_embeddings 128 (config.json)", e.Message);
        Assert.Equal(129, model.CacheCapacity);
    }
}
