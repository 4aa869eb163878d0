using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma3nForConditionalGeneration's (and Gemma3nForCausalLM's) text model at its edges, on the tiny model's config with
/// seeded weights built here: what it refuses (a pipeline layout, a missing lm_head, soft tokens that are not whole
/// images, more audio tokens than slots, placeholders that do not match, hard ids outside an embedder's range, soft
/// tokens of the wrong width), what the catalog's prompts never show (ids at the edges of the vision and audio ranges,
/// audio frames flagged as padding, a gemma3n_text model, no soft cap), where a failure is named (the decoder layer, the
/// embedder's projection; a released peer left unattributed), and how it sizes, resets and rewinds its caches. The
/// offline catalog runs valid prompts on one valid checkpoint, so these Stryker.NET mutants of
/// src/Engine/Models/Gemma3n/*.cs survived it (notes/issue-21-mutgemma3n.md); each test is the bug report of one.
/// </summary>
public class Gemma3nModelMutationTests
{
    private const string P = "model.language_model";
    private const int Hidden = 32, VisionHidden = 24, AudioHidden = 32;
    // the tiny model: text ids < 256, vision [256, 264), audio [264, 272); image_token_id 257, audio_token_id 265
    private const long ImageToken = 257, AudioToken = 265;

    private static Gemma3nConfig Config(Action<JsonObject>? edit = null) => Gemma3nConfigMutationTests.Read(Gemma3nConfigMutationTests.Json(edit));

    /// <summary>Seeded weights for every tensor the config declares (norm weights around 1, matrices around 0).</summary>
    internal static Dictionary<string, Tensor> Weights(Gemma3nConfig config, DType dt, ulong seed = 90)
    {
        var weights = new Dictionary<string, Tensor>();
        foreach (var e in Gemma3nTensors.Expected(config).Tensors.Where(e => !e.Optional))
            weights[e.Name] = (e.Shape.Length == 1 ? Tensor.Normal(DType.Float32, seed++, 1f, 0.2f, e.Shape)
                : Tensor.Normal(DType.Float32, seed++, 0f, 0.15f, e.Shape)).To(dt);
        return weights;
    }

    private static Gemma3nModel Model(Gemma3nConfig? config = null, Dictionary<string, Tensor>? weights = null, DType? dt = null,
        ParallelContext? ctx = null, IActivationSink? sink = null, Gemma3nOptions? options = null)
    {
        config ??= Config();
        return new Gemma3nModel(new DictionaryWeights(weights ?? Weights(config, dt ?? DType.Float32)), config, ctx ?? ParallelContext.Single, sink, options);
    }

    private static Gemma3nPrompt Text(params long[] ids) => new(Tensor.FromArray(ids, ids.Length));

    private static readonly long[] SoftPrompt = [2, 250, 257, 257, 257, 257, 251, 252, 265, 265, 265, 253];
    private static Tensor ImageSoft(int n) => Tensor.Normal(DType.Float32, 401, 0, 1, n, VisionHidden);
    private static Tensor AudioSoft(int m) => Tensor.Normal(DType.Float32, 402, 0, 1, m, AudioHidden);

    private sealed class Recorder(Func<string, bool> wants) : IActivationSink
    {
        public readonly Dictionary<string, Tensor> Values = [];
        public bool Wants(string module) => wants(module);
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Values.TryAdd(module, value.Select(0, 0).Clone());
    }

    private static void AssertClose(Tensor expected, Tensor actual, double tolerance = 1e-5)
    {
        Assert.Equal(expected.ShapeArray, actual.ShapeArray);
        var e = expected.ToFloatArray();
        var a = actual.ToFloatArray();
        for (int i = 0; i < e.Length; i++)
            Assert.True(Math.Abs(e[i] - a[i]) <= tolerance * (1 + Math.Abs(e[i])), $"element {i}: expected {e[i]}, got {a[i]}");
    }

    private static Tensor Row(Tensor t, int i) => t.Select(0, i).Unsqueeze(0);

    private sealed class Names : IActivationSink
    {
        public readonly List<string> Recorded = [];
        public bool Wants(string module) => true;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Recorded.Add(module);
    }

    [Fact]
    public void Each_embedder_module_is_recorded_once_as_hfs_hooks_keep_the_hard_token_pass()
    {
        // HF runs embed_vision / embed_audio on the hard ids first, then on the soft tokens; the reference keeps a hook's
        // first call, so the soft pass records only soft_embedding_norm, and the audio padding row records nothing
        var names = new Names();
        Model(sink: names).Forward(new Gemma3nPrompt(Tensor.FromArray(SoftPrompt, 12), ImageSoft(4), AudioSoft(2), [true, false]));
        foreach (var e in new[] { "model.embed_vision", "model.embed_audio" })
        {
            Assert.Equal([e + ".hard_embedding_norm", e + ".embedding_projection", e + ".embedding_post_projection_norm", e, e + ".soft_embedding_norm"],
                names.Recorded.Where(m => m.StartsWith(e, StringComparison.Ordinal)));
        }
        var embedder = new Gemma3nMultimodalEmbedder(new DictionaryWeights(Weights(Config(), DType.Float32)), "model.embed_vision", Config().Vision!,
            ParallelContext.Single, names = new Names());
        embedder.ForwardHard(Tensor.FromArray([259L], 1), record: false);
        embedder.ForwardSoft(ImageSoft(4), record: false);
        Assert.Empty(names.Recorded);
    }

    [Fact]
    public void A_pipeline_layout_is_refused()
    {
        var ctx = new ThreadWorld(2).LayoutFor(0, 1, 2);
        var e = Assert.Throws<ArgumentException>(() => Model(ctx: ctx));
        Assert.Equal("the engine's Gemma3n runs without pipeline parallelism (PP=1)", e.Message);
    }

    [Fact]
    public void An_untied_model_without_lm_head_is_refused_and_a_stored_head_wins_over_the_tied_table()
    {
        var config = Config();
        var weights = Weights(config, DType.Float32);
        var untied = config with { Text = config.Text with { Base = config.Text.Base with { TieWordEmbeddings = false } } };
        Assert.Equal("lm_head.weight is missing and tie_word_embeddings is false",
            Assert.Throws<KeyNotFoundException>(() => Model(untied, weights)).Message);
        var tied = Model(config, weights).Forward(Text(2, 17, 140)).ToFloatArray();
        weights["lm_head.weight"] = weights[P + ".embed_tokens.weight"];
        Assert.Equal(tied, Model(untied, weights).Forward(Text(2, 17, 140)).ToFloatArray());
        weights["lm_head.weight"] = Tensor.Normal(DType.Float32, 5, 0f, 0.15f, 272, Hidden);
        Assert.NotEqual(tied, Model(config, weights).Forward(Text(2, 17, 140)).ToFloatArray());
    }

    [Fact]
    public void An_embedding_table_that_is_not_a_matrix_is_refused_naming_the_tensor()
    {
        // a checkpoint read without the validator (the model is a public API): embed_tokens.weight flattened to 1-D
        var config = Config();
        var weights = Weights(config, DType.Float32);
        weights[P + ".embed_tokens.weight"] = Tensor.Zeros(DType.Float32, 272 * Hidden);
        var e = Assert.Throws<ArgumentException>(() => Model(config, weights));
        Assert.Equal($"{P}.embed_tokens.weight: an embedding table is [vocab, hidden], got shape [{272 * Hidden}]", e.Message);
    }

    [Fact]
    public void A_gemma3n_text_model_reads_its_weights_under_model_and_takes_no_soft_tokens()
    {
        // Gemma3nForCausalLM: the same text model with its weights under "model." instead of "model.language_model."
        var mm = Config();
        var mmWeights = Weights(mm, DType.Float32);
        var text = Gemma3nConfigMutationTests.Read(Gemma3nConfigMutationTests.TextJson());
        var weights = mmWeights.Where(kv => kv.Key.StartsWith(P + ".", StringComparison.Ordinal))
            .ToDictionary(kv => "model." + kv.Key[(P.Length + 1)..], kv => kv.Value);
        var model = Model(text, weights);
        Assert.Null(model.EmbedVision);
        Assert.Null(model.EmbedAudio);
        // a text prompt gives the multimodal model's logits (its embedders do not touch text ids)
        Assert.Equal(Model(mm, mmWeights).Forward(Text(2, 17, 140, 33)).ToFloatArray(), model.Forward(Text(2, 17, 140, 33)).ToFloatArray());
        var e = Assert.Throws<ArgumentException>(() => Model(text, weights).Forward(new Gemma3nPrompt(Tensor.FromArray([2L, 257], 2), ImageSoft(4))));
        Assert.Equal("a gemma3n_text model takes no soft tokens", e.Message);
        e = Assert.Throws<ArgumentException>(() => Model(text, weights).Forward(new Gemma3nPrompt(Tensor.FromArray([2L, 265], 2), AudioSoftTokens: AudioSoft(1))));
        Assert.Equal("a gemma3n_text model takes no soft tokens", e.Message);
    }

    [Theory]
    [InlineData("float32")]
    [InlineData("bfloat16")]
    public void Without_a_soft_cap_the_logits_are_lm_heads_output_and_with_one_they_are_capped(string dtype)
    {
        var dt = DTypeInfo.Parse(dtype);
        var capped = Config();
        var weights = Weights(capped, dt);
        var none = Config(j => j["text_config"]!["final_logit_softcapping"] = null);
        var sink = new Recorder(m => m is "lm_head" or "logits");
        var logits = Model(none, weights, sink: sink).Forward(Text(2, 17, 140));
        Assert.Equal(sink.Values["lm_head"].ToFloatArray(), logits.ToFloatArray());
        Assert.Equal(sink.Values["logits"].ToFloatArray(), logits.ToFloatArray());
        var cappedLogits = Model(capped, weights).Forward(Text(2, 17, 140)).ToFloatArray();
        Assert.All(cappedLogits, x => Assert.InRange(x, -7.5f, 7.5f));
        Assert.NotEqual(logits.ToFloatArray(), cappedLogits);
    }

    [Fact]
    public void Ids_at_the_edges_of_the_vision_and_audio_ranges_go_through_their_embedders_and_read_per_layer_row_0()
    {
        // HF: vision_mask = 256 <= id < 264, audio_mask = id >= 264; get_per_layer_inputs maps ids >= vocab_size_per_layer_input
        // (256) to 0. The catalog's hard ids are 259, 262 and 268: none at an edge of a range.
        var sink = new Recorder(m => m is P + ".inputs_embeds" or P + ".embed_tokens_per_layer" or P + ".embed_tokens");
        var model = Model(sink: sink);
        model.Forward(Text(0, 256, 263, 264, 271, 255));
        var embeds = sink.Values[P + ".inputs_embeds"];                                     // [6, 32]
        var ple = sink.Values[P + ".embed_tokens_per_layer"];                                // [6, 4 * 8]
        AssertClose(model.EmbedVision!.ForwardHard(Tensor.FromArray([256L], 1), record: false), Row(embeds, 1));
        AssertClose(model.EmbedVision.ForwardHard(Tensor.FromArray([263L], 1), record: false), Row(embeds, 2));
        AssertClose(model.EmbedAudio!.ForwardHard(Tensor.FromArray([264L], 1), record: false), Row(embeds, 3));
        AssertClose(model.EmbedAudio.ForwardHard(Tensor.FromArray([271L], 1), record: false), Row(embeds, 4));
        var text = sink.Values[P + ".embed_tokens"];
        Assert.Equal(Row(text, 5).ToFloatArray(), Row(embeds, 5).ToFloatArray());           // 255: the last text id
        Assert.Equal(Row(text, 0).ToFloatArray(), Row(embeds, 0).ToFloatArray());
        for (int i = 1; i <= 4; i++) Assert.Equal(Row(ple, 0).ToFloatArray(), Row(ple, i).ToFloatArray());
        Assert.NotEqual(Row(ple, 0).ToFloatArray(), Row(ple, 5).ToFloatArray());
    }

    [Fact]
    public void The_per_layer_inputs_carry_hfs_two_scales_which_a_large_rms_norm_eps_makes_visible()
    {
        // project_per_layer_inputs: norm(per_layer_model_projection(embeds) * hidden**-0.5) then (... + per-layer tokens) * 2**-0.5.
        // Each scale sits in front of an RMSNorm (per_layer_projection_norm; the layer's post_per_layer_input_norm after
        // the gate and projection), which cancels it up to eps: at the tiny model's eps 2e-6 a wrong scale moves a value by
        // about eps / mean square. With eps = 0.5 the scales decide the values; both are recomputed here from the records.
        var config = Config(j => j["text_config"]!["rms_norm_eps"] = 0.5);
        var weights = Weights(config, DType.Float32);
        var sink = new Recorder(m => m is P + ".per_layer_model_projection" or P + ".per_layer_projection_norm" or P + ".embed_tokens_per_layer"
            or P + ".layers.0.per_layer_input_gate" or P + ".layers.0.post_per_layer_input_norm");
        Model(config, weights, sink: sink).Forward(Text(2, 17, 140, 33));
        const int t = 4, layers = 4, ple = 8;
        var projection = sink.Values[P + ".per_layer_model_projection"];                        // [4, 4 * 8]
        var expectedNorm = Harness.Engine.Ops.Norms.RmsNorm(Harness.Engine.Ops.Elementwise.Mul(projection, Math.Pow(Hidden, -0.5)).Reshape(t, layers, ple),
            weights[P + ".per_layer_projection_norm.weight"], 0.5, Harness.Engine.Ops.RmsNormKind.GemmaScaled);
        AssertClose(expectedNorm, sink.Values[P + ".per_layer_projection_norm"]);
        // layer 0: post_per_layer_input_norm(per_layer_projection(silu(gate) * per_layer_input)), per_layer_input = (norm + tokens) / sqrt(2)
        var tokens = sink.Values[P + ".embed_tokens_per_layer"].Reshape(t, layers, ple);
        var input0 = Harness.Engine.Ops.Elementwise.Mul(Harness.Engine.Ops.Elementwise.Add(expectedNorm, tokens), 1 / Math.Sqrt(2)).Select(1, 0);   // [4, 8]
        var gated = Harness.Engine.Ops.Elementwise.Mul(Harness.Engine.Ops.Activation.Apply(sink.Values[P + ".layers.0.per_layer_input_gate"],
            Harness.Engine.Ops.ActivationKind.Silu), input0);
        var expected = Harness.Engine.Ops.Norms.RmsNorm(new Harness.Engine.Layers.Linear(weights[P + ".layers.0.per_layer_projection.weight"]).Forward(gated),
            weights[P + ".layers.0.post_per_layer_input_norm.weight"], 0.5, Harness.Engine.Ops.RmsNormKind.GemmaScaled);
        AssertClose(expected, sink.Values[P + ".layers.0.post_per_layer_input_norm"], 1e-4);
    }

    [Fact]
    public void Hard_ids_outside_an_embedders_range_are_refused_naming_the_embedder_and_the_position()
    {
        var model = Model();
        Assert.Equal("model.embed_vision: token id 264 at position 0 is outside [256, 264)",
            Assert.Throws<ArgumentException>(() => model.EmbedVision!.ForwardHard(Tensor.FromArray([264L], 1))).Message);
        Assert.Equal("model.embed_vision: token id 255 at position 1 is outside [256, 264)",
            Assert.Throws<ArgumentException>(() => model.EmbedVision!.ForwardHard(Tensor.FromArray([256L, 255], 2))).Message);
        Assert.Equal("model.embed_audio: token id 272 at position 0 is outside [264, 272)",
            Assert.Throws<ArgumentException>(() => model.EmbedAudio!.ForwardHard(Tensor.FromArray([272L], 1))).Message);
    }

    [Fact]
    public void Soft_tokens_of_the_wrong_width_or_rank_are_refused_naming_the_config_field()
    {
        var model = Model();
        Assert.Equal("model.embed_vision: soft tokens must be [tokens, 24] (vision_config.hidden_size), got [4, 23]",
            Assert.Throws<ArgumentException>(() => model.EmbedVision!.ForwardSoft(Tensor.Zeros(DType.Float32, 4, 23))).Message);
        Assert.Equal("model.embed_audio: soft tokens must be [tokens, 32] (audio_config.hidden_size), got [1, 3, 32]",
            Assert.Throws<ArgumentException>(() => model.EmbedAudio!.ForwardSoft(Tensor.Zeros(DType.Float32, 1, 3, 32))).Message);
    }

    [Fact]
    public void Image_soft_tokens_must_be_whole_images_and_fill_exactly_the_placeholders()
    {
        var model = Model();
        Assert.Equal("5 image soft tokens are not whole images of vision_soft_tokens_per_image 4",
            Assert.Throws<ArgumentException>(() => Model().Forward(new Gemma3nPrompt(Tensor.FromArray(SoftPrompt, 12), ImageSoft(5)))).Message);
        Assert.Equal("8 soft tokens for 4 positions of image_token_id 257",
            Assert.Throws<ArgumentException>(() => Model().Forward(new Gemma3nPrompt(Tensor.FromArray(SoftPrompt, 12), ImageSoft(8)))).Message);
        Assert.Equal("3 soft tokens for 2 positions of audio_token_id 265",
            Assert.Throws<ArgumentException>(() => Model().Forward(new Gemma3nPrompt(Tensor.FromArray([2L, 265, 265, 253], 4), AudioSoftTokens: AudioSoft(2)))).Message);
        Assert.Equal("4 audio soft tokens exceed audio_soft_tokens_per_image 3",
            Assert.Throws<ArgumentException>(() => Model().Forward(new Gemma3nPrompt(Tensor.FromArray(SoftPrompt, 12), ImageSoft(4), AudioSoft(4)))).Message);
        // as many audio tokens as slots: no padding row, every placeholder a tower row
        var sink = new Recorder(m => m == P + ".inputs_embeds");
        Model(sink: sink).Forward(new Gemma3nPrompt(Tensor.FromArray(SoftPrompt, 12), ImageSoft(4), AudioSoft(3)));
        var embeds = sink.Values[P + ".inputs_embeds"];
        var audio = model.EmbedAudio!.ForwardSoft(AudioSoft(3), record: false);
        var image = model.EmbedVision!.ForwardSoft(ImageSoft(4), record: false);
        for (int j = 0; j < 3; j++) AssertClose(Row(audio, j), Row(embeds, 8 + j));
        for (int j = 0; j < 4; j++) AssertClose(Row(image, j), Row(embeds, 2 + j));
    }

    [Fact]
    public void Audio_frames_flagged_as_padding_take_the_last_audio_hard_tokens_embedding()
    {
        // Gemma3nModel.forward: audio_features = torch.where(audio_mask.unsqueeze(-1), audio_padding_embs, audio_features),
        // audio_padding_embs = embed_audio(vocab_size - 1); then padded to audio_soft_tokens_per_image with the same row.
        // The catalog's prompts have no padding flags (compare --audio has, through the engine's own tower).
        var model = Model();
        var pad = model.EmbedAudio!.ForwardHard(Tensor.FromArray([271L], 1), record: false);
        var tower = model.EmbedAudio.ForwardSoft(AudioSoft(2), record: false);
        Tensor Embeds(bool[]? padding)
        {
            var sink = new Recorder(m => m == P + ".inputs_embeds");
            Model(sink: sink).Forward(new Gemma3nPrompt(Tensor.FromArray(SoftPrompt, 12), ImageSoft(4), AudioSoft(2), padding));
            return sink.Values[P + ".inputs_embeds"];
        }
        var flagged = Embeds([false, true]);
        AssertClose(Row(tower, 0), Row(flagged, 8));
        AssertClose(pad, Row(flagged, 9));                                                    // the flagged frame
        AssertClose(pad, Row(flagged, 10));                                                   // the slot past the tower's 2 tokens
        var unflagged = Embeds([false, false]);
        Assert.Equal(Embeds(null).ToFloatArray(), unflagged.ToFloatArray());
        AssertClose(Row(tower, 1), Row(unflagged, 9));
        AssertClose(pad, Row(unflagged, 10));
        Assert.Equal("3 audio padding flags for 2 audio soft tokens",
            Assert.Throws<ArgumentException>(() => Embeds([false, true, false])).Message);
        Assert.Equal("1 audio padding flags for 2 audio soft tokens", Assert.Throws<ArgumentException>(() => Embeds([false])).Message);
    }

    [Fact]
    public void A_failure_in_a_decoder_layer_is_named_at_the_layer_and_never_skipped()
    {
        // layer 1's per_layer_projection takes 7 inputs where the per-layer gate gives 8: its matmul fails inside the layer
        var config = Config();
        var weights = Weights(config, DType.Float32);
        weights[P + ".layers.1.per_layer_projection.weight"] = Tensor.Normal(DType.Float32, 3, 0f, 0.15f, Hidden, 7);
        var e = Assert.Throws<ModuleFailedException>(() => Model(config, weights).Forward(Text(2, 17, 140)));
        Assert.Equal((P + ".layers.1", 0), (e.Module, e.WorldRank));
        Assert.StartsWith(P + ".layers.1 (rank 0) failed: ", e.Message);
    }

    [Fact]
    public void A_rank_released_by_its_peers_layer_failure_is_left_unattributed()
    {
        // TP=2: rank 1's layer 1 fails (as above); rank 0 goes on to layer 2 and waits in an all-reduce that its peer never
        // joins: its CollectiveException (PeerFailed) is not where the run broke, so no module is named for rank 0
        var config = Config();
        var good = Weights(config, DType.Float32);
        var bad = new Dictionary<string, Tensor>(good) { [P + ".layers.1.per_layer_projection.weight"] = Tensor.Normal(DType.Float32, 3, 0f, 0.15f, Hidden, 7) };
        var e = Assert.Throws<RankFailedException>(() => ThreadWorld.Run(2, rank =>
            Model(config, rank == 1 ? bad : good, ctx: ThreadWorld.Layout(rank, 2, 1)).Forward(Text(2, 17, 140)), TimeSpan.FromSeconds(60)));
        var failed = Assert.IsType<ModuleFailedException>(e.ErrorOf(1));
        Assert.Equal((P + ".layers.1", 1), (failed.Module, failed.WorldRank));
        var released = Assert.IsType<CollectiveException>(e.ErrorOf(0));
        Assert.Equal(CollectiveFailure.PeerFailed, released.Failure);
    }

    [Fact]
    public void A_rank_released_inside_the_embedders_projection_is_left_unattributed()
    {
        // TP=2: rank 1's hard_embedding_norm weight is one short, so its norm fails before the projection; rank 0 waits in
        // the projection's all-reduce and is released: its error is its peer's, not embed_vision.embedding_projection's
        var config = Config();
        var good = Weights(config, DType.Float32);
        var bad = new Dictionary<string, Tensor>(good) { ["model.embed_vision.hard_embedding_norm.weight"] = Tensor.Normal(DType.Float32, 3, 1f, 0.2f, VisionHidden - 1) };
        var e = Assert.Throws<RankFailedException>(() => ThreadWorld.Run(2, rank =>
            Model(config, rank == 1 ? bad : good, ctx: ThreadWorld.Layout(rank, 2, 1)).Forward(Text(2, 17, 259)), TimeSpan.FromSeconds(60)));
        Assert.NotNull(e.ErrorOf(1));
        Assert.IsNotType<ModuleFailedException>(e.ErrorOf(1));                                // the norm is not the projection
        var released = Assert.IsType<CollectiveException>(e.ErrorOf(0));
        Assert.Equal(CollectiveFailure.PeerFailed, released.Failure);
    }

    [Fact]
    public void The_caches_hold_max_positions_grow_for_a_longer_sequence_and_never_shrink()
    {
        Assert.Equal(256, Model().CacheCapacity);                                           // Gemma3nOptions.MaxPositions' default
        var model = Model(options: new Gemma3nOptions { MaxPositions = 4 });
        Assert.Equal(4, model.CacheCapacity);
        model.StartSequence(10);
        Assert.Equal(10, model.CacheCapacity);
        model.StartSequence(6);
        Assert.Equal(10, model.CacheCapacity);
        Assert.Equal("the prompt and the tokens to generate need 97 positions, more than max_position_embeddings 96 (config.json)",
            Assert.Throws<ArgumentException>(() => model.StartSequence(97)).Message);
        Assert.Equal(10, model.CacheCapacity);
    }

    [Fact]
    public void A_prompt_longer_than_the_caches_sizes_them_for_itself()
    {
        var prompt = Text(2, 17, 140, 33, 201, 96);
        var small = Model(options: new Gemma3nOptions { MaxPositions = 4 });
        var logits = small.Forward(prompt);
        Assert.Equal(6, small.CacheCapacity);
        Assert.Equal(6, small.Position);
        Assert.Equal(Model().Forward(prompt).ToFloatArray(), logits.ToFloatArray());
    }

    [Fact]
    public void A_forward_of_a_prompt_past_max_position_embeddings_runs_as_hfs_and_only_a_decode_request_is_refused()
    {
        // HF's forward takes any prompt length (RoPE has no table to run past); the engine's captured prefill does too,
        // sizing its caches for the prompt. A decode request (prompt + new tokens) is checked when it starts its sequence.
        // The caches hold exactly the prompt here (100 of them, past max_position_embeddings 96) and more by default.
        var prompt = Text([.. Enumerable.Range(0, 100).Select(i => (long)(3 + i))]);
        Assert.Equal([100, 272], Model(options: new Gemma3nOptions { MaxPositions = 100 }).Forward(prompt).ShapeArray);
        Assert.Equal([100, 272], Model().Forward(prompt).ShapeArray);
        Assert.Equal("the prompt and the tokens to generate need 101 positions, more than max_position_embeddings 96 (config.json)",
            Assert.Throws<ArgumentException>(() => Model().Generate(prompt, 1, 3)).Message);
    }

    [Fact]
    public void Logits_to_keep_runs_lm_head_on_the_last_rows_only()
    {
        // HF's logits_to_keep: the decode loop's prefill keeps 1 (it picks from the last row either way, so only the shape tells)
        var prompt = Text(2, 17, 140, 33);
        var all = Model().Forward(prompt);                                                  // [4, 272]
        var kept = Model().Forward(prompt, logitsToKeep: 2);
        Assert.Equal([2, 272], kept.ShapeArray);
        AssertClose(all.Narrow(0, 2, 2), kept);
    }

    [Fact]
    public void A_second_generation_on_one_model_starts_a_new_sequence()
    {
        var prompt = Text(2, 17, 140, 33);
        var fresh = Model().Generate(prompt, 4, 3);
        var reused = Model();
        reused.Generate(Text(2, 200, 9), 5, 3);
        var second = reused.Generate(prompt, 4, 3);
        Assert.Equal(fresh.Tokens, second.Tokens);
        Assert.Equal(fresh.TopKLogprobs.Cast<float>(), second.TopKLogprobs.Cast<float>());
        Assert.Equal(7, reused.Position);                                                  // 4 prompt tokens + 3 fed back
    }

    [Fact]
    public void Rewind_forgets_the_steps_after_the_position()
    {
        var model = Model();
        model.Forward(Text(2, 17, 140, 33, 201));
        var first = model.Step(96)!.ToFloatArray();
        model.Step(40);
        model.Rewind(5);
        Assert.Equal(5, model.Position);
        Assert.Equal(first, model.Step(96)!.ToFloatArray());
    }

    [Fact]
    public void Generate_with_forced_tokens_feeds_them_as_a_teacher_forced_request_does()
    {
        var prompt = Text(2, 17, 140);
        var free = Model().Generate(prompt, 2, 3);
        long other = free.Tokens[0] == 7 ? 8 : 7;                                          // not the model's own pick
        var forced = Model().Generate(prompt, 2, 3, [other]);
        Assert.Equal(free.Tokens[0], forced.Tokens[0]);
        var extended = Model().Generate(Text(2, 17, 140, other), 1, 3);                     // the step after `other`, directly
        Assert.Equal(extended.Tokens[0], forced.Tokens[1]);
        for (int j = 0; j < 3; j++)                                                         // a prefill row against a decode step: float32 noise
        {
            Assert.Equal(extended.TopKIds[0, j], forced.TopKIds[1, j]);
            Assert.Equal(extended.TopKLogprobs[0, j], forced.TopKLogprobs[1, j], 1e-5);
        }
    }

    [Fact]
    public void On_the_host_there_is_no_graph_step_and_graph_steps_run_one_rank()
    {
        var model = Model();
        Assert.Null(model.Device);
        Assert.Null(model.GraphUnsupported);
        Assert.Equal("DeviceForward needs a DeviceStep",
            Assert.Throws<InvalidOperationException>(() => model.DeviceForward(Tensor.FromArray([17L], 1))).Message);
        var config = Config();
        var weights = Weights(config, DType.Float32);
        var reasons = ThreadWorld.Run(2, rank => Model(config, weights, ctx: ThreadWorld.Layout(rank, 2, 1)).GraphUnsupported);
        Assert.Equal(2, reasons.Length);
        Assert.All(reasons, r => Assert.Equal("Gemma3n graph steps run one rank", r));
    }

    [Fact]
    public void A_kv_shared_layer_refuses_heads_the_tensor_parallel_size_does_not_divide()
    {
        // the shared layer builds its own q_proj (no QKVParallelLinear to refuse it): 4 heads at TP=3
        var config = Config();
        var ctx = new ThreadWorld(3).LayoutFor(0, 3, 1);
        var e = Assert.Throws<ArgumentException>(() => new Gemma3nAttention(new DictionaryWeights(Weights(config, DType.Float32)),
            P + ".layers.2.self_attn", config.Text, 2, ctx));
        Assert.Equal(P + ".layers.2.self_attn.q_proj: 4 attention heads are not divisible by the tensor-parallel size 3", e.Message);
    }

    [Fact]
    public void A_kv_shared_layers_q_proj_that_does_not_split_over_tp_is_named_at_its_weight()
    {
        // a checkpoint read without the validator: layer 2 (KV-shared, its own q_proj) with 31 output rows at TP=2
        var config = Config();
        var weights = Weights(config, DType.Float32);
        weights[P + ".layers.2.self_attn.q_proj.weight"] = Tensor.Zeros(DType.Float32, 31, Hidden);
        var ctx = new ThreadWorld(2).LayoutFor(0, 2, 1);
        var e = Assert.Throws<ArgumentException>(() => new Gemma3nAttention(new DictionaryWeights(weights), P + ".layers.2.self_attn", config.Text, 2, ctx));
        Assert.Equal(P + ".layers.2.self_attn.q_proj.weight [31, 32] dim 0: size 31 is not divisible by the tensor-parallel size 2", e.Message);
    }

    [Fact]
    public void A_kv_shared_layer_adds_its_own_q_proj_bias_when_attention_bias_is_set()
    {
        var plain = Config();
        var biased = Config(j => j["text_config"]!["attention_bias"] = true);
        var weights = Weights(plain, DType.Float32);
        foreach (var e in Gemma3nTensors.Expected(biased).Tensors.Where(e => e.Name.EndsWith(".bias", StringComparison.Ordinal)))
            weights[e.Name] = Tensor.Zeros(DType.Float32, e.Shape);
        var prompt = Text(2, 17, 140, 33);
        var unbiased = Model(plain, weights).Forward(prompt).ToFloatArray();
        Assert.Equal(unbiased, Model(biased, weights).Forward(prompt).ToFloatArray());         // zero biases change nothing
        weights[P + ".layers.2.self_attn.q_proj.bias"] = Tensor.Normal(DType.Float32, 9, 0f, 1f, 32);
        Assert.NotEqual(unbiased, Model(biased, weights).Forward(prompt).ToFloatArray());
    }

    [Fact]
    public void The_float32_normal_icdf_of_a_sparsity_is_the_float32_of_the_exact_inverse_of_erf()
    {
        // Normal(0, 1).icdf(p) for a float32 p = erfinv(2p - 1) * sqrt(2) in float32; erfinv by bisection on the float64
        // erf (independent of ErfInv's first guess and Newton steps). Central values and both tails (|2p - 1| > 0.9966).
        static double Bisect(double y)
        {
            double lo = -6, hi = 6;
            for (int i = 0; i < 200; i++)
            {
                double mid = (lo + hi) / 2;
                if (Harness.Engine.Kernels.Erf.Compute(mid) < y) lo = mid; else hi = mid;
            }
            return (lo + hi) / 2;
        }
        var ps = Enumerable.Range(1, 99).Select(k => k / 100.0).Concat([0.0005, 0.001, 0.0015, 0.999, 0.9985, 0.9995]);
        foreach (double p in ps)
        {
            float arg = 2f * (float)p - 1f;
            Assert.True((float)Bisect(arg) * (float)Math.Sqrt(2.0) == Gemma3nMlp.NormalIcdf(p), $"p = {p}");
        }
    }

    [Fact]
    public void Erfinv_is_infinite_at_plus_and_minus_one_and_exact_in_both_branches()
    {
        Assert.Equal(double.NegativeInfinity, Gemma3nMlp.ErfInv(-1));
        Assert.Equal(double.PositiveInfinity, Gemma3nMlp.ErfInv(1));
        Assert.Equal(double.NegativeInfinity, Gemma3nMlp.ErfInv(-1.5));
        Assert.Equal(double.PositiveInfinity, Gemma3nMlp.ErfInv(1.5));
        Assert.Equal(float.NegativeInfinity, Gemma3nMlp.NormalIcdf(0));
        // erf(erfinv(y)) = y in the central branch (w < 5) and the tail (w >= 5: |y| > 0.9966)
        foreach (double y in new[] { -0.9, -0.3, 0.0, 0.2, 0.6, 0.95, 0.99, 0.9970, 0.99999, -0.999999 })
            Assert.True(Math.Abs(Harness.Engine.Kernels.Erf.Compute(Gemma3nMlp.ErfInv(y)) - y) <= 1e-15, $"y = {y}");
    }
}
