using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Models;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Qwen2VLForConditionalGeneration's contract at its edges, on the tiny model's config with seeded weights built here:
/// what it refuses (a pipeline layout, a missing lm_head, weights the config does not make, pixel values or placeholders
/// that do not match the grids), where a failure is named (the decoder layer's self_attn, the vision block, the merger),
/// what it records (only what a sink wants), how the decode step's position carries the prompt's rope delta, and how it
/// sizes its caches. The offline catalog runs valid prompts on valid checkpoints only, so these Stryker.NET mutants of
/// src/Engine/Models/Qwen2Vl/*.cs survived it (notes/issue-21-mutqwen.md); each test is the bug report of one.
/// fp32 and bf16 where the mutant acts on values.
/// </summary>
public class Qwen2VlModelMutationTests
{
    private const int Image = 290, Video = 291, Start = 292, End = 293, Vocab = 300, Hidden = 64;

    private static Qwen2VlConfig Config(Action<JsonObject>? edit = null) => Qwen2VlConfigMutationTests.From(Qwen2VlConfigMutationTests.Json(edit));

    private static Dictionary<string, Tensor> Weights(Qwen2VlConfig config, DType dt)
    {
        var weights = new Dictionary<string, Tensor>();
        ulong seed = 70;
        foreach (var e in Qwen2VlTensors.Expected(config).Tensors.Where(e => !e.Optional))
            weights[e.Name] = Tensor.Normal(DType.Float32, seed++, 0f, 0.15f, e.Shape).To(dt);
        return weights;
    }

    private static Qwen2VlForConditionalGeneration Model(DType dt, int maxPositions = 32, Qwen2VlOptions? options = null, IActivationSink? sink = null,
        Qwen2VlConfig? config = null, Dictionary<string, Tensor>? weights = null, ParallelContext? ctx = null)
    {
        config ??= Config();
        return new Qwen2VlForConditionalGeneration(new DictionaryWeights(weights ?? Weights(config, dt)), config, ctx ?? ParallelContext.Single, sink,
            options, maxPositions);
    }

    /// <summary>Processor-layout pixel values [patches, 3*1*4*4] for the grids.</summary>
    private static Tensor Pixels(ulong seed, params GridThw[] grids) => Tensor.Normal(DType.Float32, seed, 0f, 1f, grids.Sum(g => g.Patches), 48);

    // A 6x6-patch image merges (3x3) to 2x2 = 4 tokens and moves the text position by max(6, 6)/3 = 2: rope_delta = -2.
    private static readonly GridThw Grid66 = new(1, 6, 6);
    private static readonly long[] ImagePrompt = [5, Start, Image, Image, Image, Image, End, 7, 9];
    private static Qwen2VlInput ImageInput(long[]? ids = null) => new(ids ?? ImagePrompt) { PixelValues = Pixels(3, Grid66), ImageGrids = [Grid66] };

    private sealed class Recorder(Func<string, bool> wants) : IActivationSink
    {
        public readonly Dictionary<string, Tensor> Values = [];
        public readonly List<string> Names = [];
        public readonly Dictionary<string, ShardSpec> Shards = [];
        public bool Wants(string module) => wants(module);
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard)
        {
            Names.Add(module);
            Values[module] = value.Clone();
            Shards[module] = shard;
        }
    }

    [Fact]
    public void A_pipeline_layout_is_refused()
    {
        var ctx = new ThreadWorld(2).LayoutFor(0, 1, 2);
        var e = Assert.Throws<NotSupportedException>(() => Model(DType.Float32, ctx: ctx));
        Assert.Equal("Qwen2-VL runs under tensor parallelism (with or without sequence parallelism), no pipeline stages", e.Message);
    }

    [Fact]
    public void An_untied_model_without_lm_head_is_refused_and_a_tied_one_reads_the_embedding()
    {
        var config = Config();
        var weights = Weights(config, DType.Float32);
        var untied = config with { Text = config.Text with { TieWordEmbeddings = false } };
        var e = Assert.Throws<KeyNotFoundException>(() => Model(DType.Float32, config: untied, weights: weights));
        Assert.Equal("lm_head.weight is missing and tie_word_embeddings is false", e.Message);
        var tied = Model(DType.Float32, config: config, weights: weights).Prefill(new([5, 17, 2])).ToFloatArray();
        weights["lm_head.weight"] = weights["model.language_model.embed_tokens.weight"];
        Assert.Equal(tied, Model(DType.Float32, config: untied, weights: weights).Prefill(new([5, 17, 2])).ToFloatArray());
        weights["lm_head.weight"] = Tensor.Normal(DType.Float32, 5, 0f, 0.15f, Vocab, Hidden);
        Assert.NotEqual(tied, Model(DType.Float32, config: config, weights: weights).Prefill(new([5, 17, 2])).ToFloatArray());   // a stored head wins
    }

    [Fact]
    public void Weights_the_config_does_not_make_are_refused_naming_the_config_field()
    {
        var config = Config();
        var weights = Weights(config, DType.Float32);
        string Refusal(Qwen2VlConfig c) => Assert.Throws<ArgumentException>(() => Model(DType.Float32, config: c, weights: weights)).Message;
        Assert.Equal("model.language_model.embed_tokens.weight is [300, 64], but text vocab_size 299 x hidden_size 64 makes it [299, 64]",
            Refusal(config with { Text = config.Text with { VocabSize = 299 } }));
        Assert.Equal("model.language_model.layers.0.mlp.gate_proj.weight is [96, 64], but text intermediate_size 95 makes it [95, 64]",
            Refusal(config with { Text = config.Text with { IntermediateSize = 95 } }));
        Assert.Equal("model.visual.blocks.0.mlp.fc1.weight is [64, 32], but vision embed_dim 32 * mlp_ratio makes it [63, 32]",
            Refusal(config with { VisionMlpHidden = 63 }));
        // a checkpoint in the released layout (model.*, visual.*) is named as stored, given bare or already wrapped
        var released = weights.ToDictionary(kv => kv.Key.Replace("model.language_model.", "model.", StringComparison.Ordinal)
            .Replace("model.visual.", "visual.", StringComparison.Ordinal), kv => kv.Value);
        var small = config with { Text = config.Text with { VocabSize = 299 } };
        foreach (IWeightSource source in new IWeightSource[] { new DictionaryWeights(released), new Qwen2VlWeights(new DictionaryWeights(released)) })
            Assert.Equal("model.embed_tokens.weight is [300, 64], but text vocab_size 299 x hidden_size 64 makes it [299, 64]",
                Assert.Throws<ArgumentException>(() => new Qwen2VlForConditionalGeneration(source, small, ParallelContext.Single)).Message);
        weights["model.visual.patch_embed.proj.weight"] = Tensor.Zeros(DType.Float32, 32, 48);
        Assert.Equal("model.visual.patch_embed.proj.weight is [32, 48], expected [32, 3, 1, 4, 4]", Refusal(config));
        weights["model.visual.patch_embed.proj.weight"] = Tensor.Zeros(DType.Float32, 32, 3, 1, 4, 3);
        Assert.Equal("model.visual.patch_embed.proj.weight is [32, 3, 1, 4, 3], expected [32, 3, 1, 4, 4]", Refusal(config));
    }

    [Fact]
    public void Vision_heads_the_tensor_parallel_size_does_not_divide_are_refused_naming_the_block()
    {
        var config = Config() with { VisionHeads = 3 };
        var ctx = new ThreadWorld(2).LayoutFor(0, 2, 1);
        var e = Assert.Throws<ArgumentException>(() => Model(DType.Float32, config: config, weights: Weights(Config(), DType.Float32), ctx: ctx));
        Assert.Equal("model.visual.blocks.0.attn: 3 vision heads are not divisible by the tensor-parallel size 2", e.Message);
    }

    [Fact]
    public void A_grid_thw_tensor_is_n_rows_of_3_and_none_is_no_grid()
    {
        Assert.Empty(Qwen2VlInput.Grids(null));
        Assert.Equal([new GridThw(1, 6, 9), new GridThw(2, 3, 3)], Qwen2VlInput.Grids(Tensor.FromArray(new long[] { 1, 6, 9, 2, 3, 3 }, 2, 3)));
        Assert.Equal("a grid_thw tensor is [n, 3], got [6]",
            Assert.Throws<ArgumentException>(() => Qwen2VlInput.Grids(Tensor.FromArray(new long[] { 1, 6, 9, 2, 3, 3 }, 6))).Message);
        Assert.Equal("a grid_thw tensor is [n, 3], got [3, 2]",
            Assert.Throws<ArgumentException>(() => Qwen2VlInput.Grids(Tensor.FromArray(new long[] { 1, 6, 9, 2, 3, 3 }, 3, 2))).Message);
        Assert.Equal("(2, 3, 3)", new GridThw(2, 3, 3).ToString());
        Assert.Equal(18, new GridThw(2, 3, 3).Patches);
        Assert.Equal(2 * 2 * 3, new GridThw(2, 6, 9).MergedTokens(3));
    }

    [Fact]
    public void Placeholders_that_do_not_match_the_features_are_refused_per_modality()
    {
        var model = Model(DType.Float32);
        var e = Assert.Throws<ArgumentException>(() => model.Prefill(ImageInput([5, Start, Image, Image, Image, End])));
        Assert.Equal("Image features and image tokens do not match, tokens: 3, features: 4", e.Message);
        var video = new Qwen2VlInput([5, Start, Video, Video, Video, Video, Video, End]) { PixelValuesVideos = Pixels(4, Grid66), VideoGrids = [Grid66] };
        e = Assert.Throws<ArgumentException>(() => model.Prefill(video));
        Assert.Equal("Video features and video tokens do not match, tokens: 5, features: 4", e.Message);
    }

    [Fact]
    public void Pixel_values_that_are_not_the_grids_patches_are_refused_naming_both()
    {
        var model = Model(DType.Float32);
        foreach (var pixels in new[] { Tensor.Zeros(DType.Float32, 35, 48), Tensor.Zeros(DType.Float32, 36, 47), Tensor.Zeros(DType.Float32, 36 * 48) })
        {
            var e = Assert.Throws<ArgumentException>(() => model.Visual.Forward(pixels, [Grid66]));
            Assert.Equal($"pixel values are {Shape.Format(pixels.Shape)}, but the grids [(1, 6, 6)] need [36, 48]", e.Message);
        }
        var two = Assert.Throws<ArgumentException>(() => model.Visual.Forward(Tensor.Zeros(DType.Float32, 36, 48), [Grid66, new GridThw(1, 3, 3)]));
        Assert.Equal("pixel values are [36, 48], but the grids [(1, 6, 6), (1, 3, 3)] need [45, 48]", two.Message);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Two_images_and_a_video_take_their_own_features_in_order(DType dt)
    {
        // masked_scatter in order per modality: the image features fill the image placeholders, the video's the video ones
        var model = Model(dt);
        var g2 = new GridThw(1, 3, 6);
        var images = Pixels(6, Grid66, g2);
        var videos = Pixels(7, Grid66);
        long[] ids = [5, Start, .. Enumerable.Repeat((long)Image, 4), End, Start, Image, Image, End, Start, .. Enumerable.Repeat((long)Video, 4), End, 8];
        var sink = new Recorder(m => m == "model.language_model.layers.0.input_layernorm");
        var all = new Qwen2VlInput(ids) { PixelValues = images, ImageGrids = [Grid66, g2], PixelValuesVideos = videos, VideoGrids = [Grid66] };
        var logits = Model(dt, sink: sink).Prefill(all);
        Assert.Equal([ids.Length, Vocab], logits.ShapeArray);
        var imageFeatures = model.Visual.Forward(images, [Grid66, g2]);
        var videoFeatures = model.Visual.Forward(videos, [Grid66]);
        Assert.Equal([6, Hidden], imageFeatures.ShapeArray);
        Assert.NotEqual(imageFeatures.Narrow(0, 0, 4).ToFloatArray(), videoFeatures.ToFloatArray());
        // the layer-0 input is the merged embeddings; feed the features directly to compare rows
        var merged = sink.Values["model.language_model.layers.0.input_layernorm"];
        Assert.Equal([1, ids.Length, Hidden], merged.ShapeArray);
        var rows = merged.ToFloatArray();
        var w = Weights(Config(), dt)["model.language_model.layers.0.input_layernorm.weight"];
        float[] Normed(Tensor feats, int row) =>
            Norms.RmsNorm(feats.Narrow(0, row, 1), w, 3e-6, RmsNormKind.Llama).ToFloatArray();   // the norm is row by row
        float[] Row(int i) => rows.AsSpan(i * Hidden, Hidden).ToArray();
        Assert.True(Close(Normed(imageFeatures, 0), Row(2), dt), "image 0's first feature is not at its first placeholder");
        Assert.True(Close(Normed(imageFeatures, 4), Row(8), dt), "image 1's first feature is not at its first placeholder");
        Assert.True(Close(Normed(videoFeatures, 3), Row(15), dt), "the video's last feature is not at its last placeholder");
    }

    private static double MaxDiff(float[] a, float[] b) => a.Zip(b).Max(p => Math.Abs(p.First - p.Second));

    private static bool Close(float[] a, float[] b, DType dt)
    {
        double tol = dt == DType.Float32 ? 1e-4 : 5e-2;
        return a.Length == b.Length && a.Zip(b).All(p => Math.Abs(p.First - p.Second) <= tol * (1 + Math.Abs(p.First)));
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void A_decode_step_after_an_image_runs_at_cache_length_plus_the_rope_delta(DType dt)
    {
        // HF: delta = cache_position[0] + self.rope_deltas. After the image prompt (9 tokens, positions up to 6,
        // rope_delta -2) the next token sits at position 7 = 9 - 2, where a prompt one token longer puts it.
        var model = Model(dt);
        model.Prefill(ImageInput());
        Assert.Equal(-2, model.RopeDelta);
        Assert.Equal(9, model.Position);
        var step = model.Step(11)!.ToFloatArray();
        var longer = Model(dt).Prefill(ImageInput([.. ImagePrompt, 11]), logitsToKeep: 1).ToFloatArray();
        var ignored = Model(dt, options: new Qwen2VlOptions { DecodeRopeDeltaIgnored = true });
        ignored.Prefill(ImageInput());
        double right = MaxDiff(longer, step), wrong = MaxDiff(longer, ignored.Step(11)!.ToFloatArray());
        Assert.True(Close(longer, step, dt), "the decode step is not the longer prompt's last row");
        Assert.True(wrong > 4 * right, $"the rope-delta fault moves the decode step by {wrong}, the right step is off by {right}");
        // a new sequence forgets the delta: a text prompt's step is at its cache length
        model.StartSequence(8);
        Assert.Equal(0, model.RopeDelta);
        Assert.Equal(0, model.Position);
        model.Prefill(new([5, 17, 2]));
        Assert.Equal(0, model.RopeDelta);
        Assert.True(Close(Model(dt).Prefill(new([5, 17, 2, 11]), 1).ToFloatArray(), model.Step(11)!.ToFloatArray(), dt));
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Logits_to_keep_returns_the_last_rows_of_the_full_logits(DType dt)
    {
        var full = Model(dt).Prefill(ImageInput());
        Assert.Equal([9, Vocab], full.ShapeArray);
        foreach (int keep in new[] { 1, 4, 9 })
        {
            var kept = Model(dt).Prefill(ImageInput(), keep);
            Assert.Equal([keep, Vocab], kept.ShapeArray);
            Assert.Equal(full.Narrow(0, 9 - keep, keep).ToFloatArray(), kept.ToFloatArray());
        }
    }

    [Fact]
    public void Start_sequence_grows_the_caches_past_the_constructors_size_and_rewinding_decodes_the_rest_as_the_first_time()
    {
        var small = Model(DType.Float32, maxPositions: 4);
        Assert.Equal(4, small.CacheCapacity);
        small.StartSequence(4);
        Assert.Equal(4, small.CacheCapacity);
        small.StartSequence(40);
        Assert.Equal(40, small.CacheCapacity);
        var prompt = Enumerable.Range(0, 30).Select(i => (long)(i * 7 % 280)).ToArray();
        var a = small.Generate(new(prompt), 8, 3);
        var b = Model(DType.Float32, maxPositions: 40).Generate(new(prompt), 8, 3);
        Assert.Equal(b.Tokens, a.Tokens);
        Assert.Equal(b.TopKLogprobs.Cast<float>(), a.TopKLogprobs.Cast<float>());
        Assert.Equal(37, small.Position);

        // caches that hold enough are kept (not shrunk); one position more than they hold reallocates
        var big = Model(DType.Float32, maxPositions: 32);
        big.StartSequence(8);
        Assert.Equal(32, big.CacheCapacity);
        var four = Model(DType.Float32, maxPositions: 4);
        four.StartSequence(5);
        Assert.Equal(5, four.CacheCapacity);
        // more than max_position_embeddings (256) is refused before any cache grows
        var e = Assert.Throws<ArgumentException>(() => four.StartSequence(257));
        Assert.Equal("the prompt and the tokens to generate need 257 positions, more than max_position_embeddings 256 (config.json)", e.Message);
        Assert.Equal(5, four.CacheCapacity);

        var model = Model(DType.Float32);
        model.Prefill(new([5, 17, 2]));
        var first = model.Step(60)!.ToFloatArray();
        model.Rewind(3);
        Assert.Equal(3, model.Position);
        Assert.Equal(first, model.Step(60)!.ToFloatArray());
    }

    [Fact]
    public void A_prompt_longer_than_the_cache_fails_at_layer_0s_self_attn_on_its_rank()
    {
        var model = Model(DType.Float32, maxPositions: 4);
        var e = Assert.Throws<ModuleFailedException>(() => model.Prefill(new([5, 6, 7, 8, 9, 10])));
        Assert.Equal("model.language_model.layers.0.self_attn", e.Module);
        Assert.Equal(0, e.WorldRank);
        Assert.Contains("cache [2, 5, 16] cannot take 6 rows after 0", e.Message);     // 4 positions + 1 SP row, 2 kv heads of 16
    }

    [Fact]
    public void A_failure_in_a_decoder_layers_mlp_is_named_at_the_layer_and_never_skipped()
    {
        // layer 1's down_proj one column short: its MLP fails at the prefill, which names layer 1 (not a silent skip)
        var config = Config();
        var weights = Weights(config, DType.Float32);
        weights["model.language_model.layers.1.mlp.down_proj.weight"] = Tensor.Normal(DType.Float32, 9, 0f, 0.1f, Hidden, 95);
        var e = Assert.Throws<ModuleFailedException>(() => Model(DType.Float32, weights: weights).Prefill(new([5, 17, 2])));
        Assert.Equal("model.language_model.layers.1", e.Module);
        Assert.Equal(0, e.WorldRank);
    }

    [Fact]
    public void A_vision_failure_is_named_at_the_block_or_the_merger_where_it_happens()
    {
        // a 4x3-patch grid is not whole 3x3 merge blocks: the 2D rotary has rows for 9 of the 12 patches, block 0 fails
        var model = Model(DType.Float32);
        var e = Assert.Throws<ModuleFailedException>(() => model.Visual.Forward(Pixels(8, new GridThw(1, 4, 3)), [new GridThw(1, 4, 3)]));
        Assert.Equal("model.visual.blocks.0", e.Module);
        // a merger whose first linear is not [m^2*E, m^2*E] fails in the merger
        var config = Config();
        var weights = Weights(config, DType.Float32);
        weights["model.visual.merger.mlp.0.weight"] = Tensor.Normal(DType.Float32, 9, 0f, 0.1f, 288, 287);
        e = Assert.Throws<ModuleFailedException>(() => Model(DType.Float32, weights: weights).Visual.Forward(Pixels(3, Grid66), [Grid66]));
        Assert.Equal("model.visual.merger", e.Module);
        Assert.Equal(0, e.WorldRank);
    }

    [Fact]
    public void A_tower_rank_released_by_its_peers_failure_in_a_vision_block_is_left_unattributed()
    {
        // TP=2 tower: rank 1 is handed a 4x3-patch grid (not whole merge blocks: its block 0 fails, as above) and rank 0
        // a valid 6x6 one; rank 0 then waits in block 0's all-reduce for a peer that never comes. Its CollectiveException
        // (PeerFailed) is its peer's failure, not model.visual.blocks.0's on rank 0: left unwrapped, as the decoder's are
        var config = Config();
        var weights = Weights(config, DType.Float32);
        var bad = new GridThw(1, 4, 3);
        var e = Assert.Throws<RankFailedException>(() => ThreadWorld.Run(2, rank =>
            Model(DType.Float32, config: config, weights: weights, ctx: ThreadWorld.Layout(rank, 2, 1)).Visual
                .Forward(rank == 1 ? Pixels(8, bad) : Pixels(3, Grid66), [rank == 1 ? bad : Grid66]), TimeSpan.FromSeconds(60)));
        var failed = Assert.IsType<ModuleFailedException>(e.ErrorOf(1));
        Assert.Equal(("model.visual.blocks.0", 1), (failed.Module, failed.WorldRank));
        var released = Assert.IsType<CollectiveException>(e.ErrorOf(0));
        Assert.Equal(CollectiveFailure.PeerFailed, released.Failure);
    }

    [Fact]
    public void Sequence_parallelism_pads_the_prompt_to_the_next_multiple_of_tp_and_no_further()
    {
        // 5 tokens at TP=2 with SP: padded to 6, each rank holds ceil(5/2) = 3 rows (rank 0 [0, 3), rank 1 [3, 6)); padding
        // rows past that change no compared value (causal attention, the final narrow) but make every rank's shard larger
        var config = Config();
        var weights = Weights(config, DType.Float32);
        var shards = ThreadWorld.Run(2, rank =>
        {
            var sink = new Recorder(m => m == "model.language_model.layers.0");
            Model(DType.Float32, config: config, weights: weights, sink: sink, ctx: ThreadWorld.Layout(rank, 2, 1, sequenceParallel: true))
                .Prefill(new([5, 17, 2, 60, 11]));
            var rows = Assert.IsType<ShardSpec.Rows>(sink.Shards["model.language_model.layers.0"]);
            return (rows.Start, rows.Count, sink.Values["model.language_model.layers.0"].Shape[1]);
        });
        Assert.Equal([(0, 3, 3), (3, 3, 3)], shards);
    }

    [Fact]
    public void Only_the_modules_a_sink_wants_are_recorded()
    {
        // a sink clones what it is handed (CaptureSink): a record nobody asked for costs a copy of the activation
        foreach (var wanted in new[] { "model.visual.patch_embed", "model.visual.blocks.1.attn", "model.visual.blocks.0.mlp", "model.visual.blocks.0",
                     "model.visual.merger", "model.language_model.embed_tokens", "model.language_model.layers.1.input_layernorm",
                     "model.language_model.layers.0.self_attn", "model.language_model.layers.0.post_attention_layernorm",
                     "model.language_model.layers.1.mlp", "model.language_model.layers.0", "model.language_model.norm", "lm_head" })
        {
            var sink = new Recorder(m => m == wanted);
            Model(DType.Float32, sink: sink).Prefill(ImageInput());
            Assert.Equal([wanted], sink.Names);
        }
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Every_module_is_recorded_with_hfs_shape_and_the_layer_is_the_sum_of_its_branches(DType dt)
    {
        var sink = new Recorder(_ => true);
        var logits = Model(dt, sink: sink).Prefill(ImageInput());
        foreach (var module in Harness.Scenarios.TinyQwen2Vl.Modules(vision: true))
            Assert.True(sink.Values.ContainsKey(module), module + " was not recorded");
        Assert.Equal([36, 32], sink.Values["model.visual.patch_embed"].ShapeArray);
        Assert.Equal([36, 32], sink.Values["model.visual.blocks.1"].ShapeArray);
        Assert.Equal([4, Hidden], sink.Values["model.visual.merger"].ShapeArray);
        Assert.Equal([1, 9, Hidden], sink.Values["model.language_model.layers.1.self_attn"].ShapeArray);
        Assert.Equal([1, 9, Vocab], sink.Values["lm_head"].ShapeArray);
        Assert.Equal(logits.ToFloatArray(), sink.Values["lm_head"].ToFloatArray());
        // without sequence parallelism every record is the whole tensor (the engine dump writes "rows" placements otherwise)
        Assert.All(sink.Shards, kv => Assert.Equal(ShardSpec.Whole, kv.Value));
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void A_config_without_hidden_act_runs_silu_in_the_decoder_mlp(DType dt)
    {
        // Qwen2VLTextConfig(hidden_act="silu"): the catalog config writes it, so only this sees the default
        var config = Config();
        var weights = Weights(config, dt);
        var silu = Model(dt, config: config, weights: weights).Prefill(new([5, 17, 2])).ToFloatArray();
        var unset = Model(dt, config: config with { Text = config.Text with { HiddenAct = null } }, weights: weights).Prefill(new([5, 17, 2])).ToFloatArray();
        Assert.Equal(silu, unset);
        var gelu = Model(dt, config: config with { Text = config.Text with { HiddenAct = "gelu_pytorch_tanh" } }, weights: weights).Prefill(new([5, 17, 2])).ToFloatArray();
        Assert.NotEqual(silu, gelu);
    }

    [Fact]
    public void On_the_host_there_is_no_graph_step()
    {
        var model = Model(DType.Float32);
        Assert.Null(model.Device);
        Assert.Null(model.GraphUnsupported);
        Assert.Same(ParallelContext.Single, model.Context);
        model.DeviceStep = null;
        Assert.Null(model.DeviceStep);
        var step = new DeviceStep(Tensor.Zeros(DType.Int32, 1), Tensor.Zeros(DType.Float32, 1));
        Assert.Equal("a graph step needs the model's weights on a GPU", Assert.Throws<InvalidOperationException>(() => model.DeviceStep = step).Message);
        Assert.Null(model.DeviceStep);
        Assert.Equal("DeviceForward needs a DeviceStep", Assert.Throws<InvalidOperationException>(() => model.DeviceForward(Tensor.Zeros(DType.Int32, 1))).Message);
    }

    // ---- Qwen2VlRope ----

    [Fact]
    public void More_vision_runs_than_grid_rows_are_refused_per_modality()
    {
        var c = Config();
        var e = Assert.Throws<ArgumentException>(() => Qwen2VlRope.RopeIndex([5, Image, 6, Image], c, [new GridThw(1, 3, 3)], []));
        Assert.Equal("the prompt has more image runs than image_grid_thw rows (1)", e.Message);
        e = Assert.Throws<ArgumentException>(() => Qwen2VlRope.RopeIndex([5, Video, 6], c, [new GridThw(1, 3, 3)], []));
        Assert.Equal("the prompt has more video runs than video_grid_thw rows (0)", e.Message);
        e = Assert.Throws<ArgumentException>(() => Qwen2VlRope.RopeIndex([5, Video, Video, 6], c, [], [new GridThw(1, 3, 3)]));
        Assert.Equal("video 0 has 2 placeholder tokens at 1..2, but its grid (1, 3, 3) merges to 1", e.Message);
    }

    [Fact]
    public void Two_videos_take_their_grids_in_order()
    {
        // the second video's run takes video_grid_thw row 1 (2 frames of one merged token): t advances per frame
        var (pos, delta) = Qwen2VlRope.RopeIndex([5, Video, 6, Video, Video], Config(), [], [new GridThw(1, 3, 3), new GridThw(2, 3, 3)]);
        Assert.Equal([0, 1, 2, 3, 4], pos[0]);
        Assert.Equal([0, 1, 2, 3, 3], pos[1]);
        Assert.Equal([0, 1, 2, 3, 3], pos[2]);
        Assert.Equal(0, delta);
    }

    [Fact]
    public void Text_only_positions_are_arange_on_all_three_streams_and_an_empty_prompt_has_no_delta()
    {
        var c = Config();
        var (pos, delta) = Qwen2VlRope.RopeIndex([5, 6, 7], c, [], []);
        Assert.Equal(3, pos.Length);
        Assert.All(pos, p => Assert.Equal([0L, 1, 2], p));
        Assert.Equal(0, delta);
        var (none, d0) = Qwen2VlRope.RopeIndex([], c, [], []);
        Assert.All(none, p => Assert.Empty(p));
        Assert.Equal(0, d0);
        var seq = Qwen2VlRope.Sequential(7, 3);
        Assert.All(seq, p => Assert.Equal([7L, 8, 9], p));
        seq[0][0] = 0;
        Assert.Equal(7, seq[1][0]);                                    // three arrays, not one
        Assert.Equal(7, seq[2][0]);
        Assert.Equal([1, 2, 0], Qwen2VlRope.TokenTypes([Image, Video, 5, Image - 1, Video + 1, Video], c).Take(3));
        Assert.Equal([0, 0, 2], Qwen2VlRope.TokenTypes([Image, Video, 5, Image - 1, Video + 1, Video], c).Skip(3));
    }

    [Fact]
    public void A_tall_image_advances_the_text_by_its_larger_side_and_two_images_take_their_grids_in_order()
    {
        var c = Config();
        // grid (1, 6, 3): 2 x 1 merged tokens, then the text resumes max(6, 3)/3 = 2 past the image's start
        var (pos, delta) = Qwen2VlRope.RopeIndex([5, Image, Image, 6, Image, Image, Image, Image, 7], c, [new GridThw(1, 6, 3), new GridThw(1, 3, 12)], []);
        Assert.Equal([0, 1, 1, 3, 4, 4, 4, 4, 8], pos[0]);
        Assert.Equal([0, 1, 2, 3, 4, 4, 4, 4, 8], pos[1]);
        Assert.Equal([0, 1, 1, 3, 4, 5, 6, 7, 8], pos[2]);
        Assert.Equal(0, delta);
        // a prompt that ends in the image: the height stream holds the largest position (2), not the temporal one (1)
        var (_, endsInImage) = Qwen2VlRope.RopeIndex([5, Image, Image], c, [new GridThw(1, 6, 3)], []);
        Assert.Equal(0, endsInImage);                                  // max(positions) + 1 - tokens = 2 + 1 - 3
    }

    [Fact]
    public void An_mrope_section_that_does_not_cover_the_head_is_refused_by_the_cos_sin()
    {
        var inv = Rotary.InvFreq(50000.0, 16);
        var e = Assert.Throws<ArgumentException>(() => Qwen2VlRope.MultimodalCosSin(inv, Qwen2VlRope.Sequential(0, 2), [4, 2, 1], DType.Float32));
        Assert.Equal("mrope_section * 2 covers 14 columns, head_dim is 16", e.Message);
    }

    [Fact]
    public void The_multimodal_cos_takes_each_column_block_from_its_stream()
    {
        // mrope_section [4, 2, 2] doubled: columns 0-3 temporal, 4-5 height, 6-7 width, 8-11 temporal, 12-13 height, 14-15 width
        var inv = Rotary.InvFreq(50000.0, 16).ToFloatArray();
        long[][] positions = [[3, 1], [5, 2], [7, 4]];
        var (cos, sin) = Qwen2VlRope.MultimodalCosSin(Rotary.InvFreq(50000.0, 16), positions, [4, 2, 2], DType.Float32);
        Assert.Equal([1, 2, 16], cos.ShapeArray);
        var c = cos.ToFloatArray();
        var s = sin.ToFloatArray();
        int[] stream = [0, 0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 2, 2];
        for (int t = 0; t < 2; t++)
            for (int d = 0; d < 16; d++)
            {
                float f = positions[stream[d]][t] * inv[d % 8];
                Assert.Equal(MathF.Cos(f), c[t * 16 + d], 5);
                Assert.Equal(MathF.Sin(f), s[t * 16 + d], 5);
            }
        var (cosBf, _) = Qwen2VlRope.MultimodalCosSin(Rotary.InvFreq(50000.0, 16), positions, [4, 2, 2], DType.BFloat16);
        Assert.Equal(DType.BFloat16, cosBf.DType);
    }

    [Fact]
    public void The_vision_rotary_is_rows_then_columns_repeated_and_the_positions_walk_merge_blocks()
    {
        var (rows, cols) = Qwen2VlRope.VisionPositions([new GridThw(2, 2, 4)], 2);
        Assert.Equal([0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1], rows);
        Assert.Equal([0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 0, 1, 2, 3, 2, 3], cols);
        var (cos, sin) = Qwen2VlRope.VisionCosSin([3, 1], [2, 5], 8);  // head_dim 8: 2 frequencies, [h h w w | h h w w]
        Assert.Equal([2, 8], cos.ShapeArray);
        double[] inv = [1.0, 1.0 / 100];                                   // 1 / 10000^(2i/4)
        var c = cos.ToFloatArray();
        var s = sin.ToFloatArray();
        int[][] pos = [[3, 2], [1, 5]];
        for (int p = 0; p < 2; p++)
            for (int j = 0; j < 8; j++)
            {
                int k = j % 4;
                double f = (k < 2 ? pos[p][0] : pos[p][1]) * inv[k % 2];
                Assert.Equal(Math.Cos(f), c[p * 8 + j], 5);
                Assert.Equal(Math.Sin(f), s[p * 8 + j], 5);
            }
        Assert.Equal([(0, 12), (12, 12), (24, 9)], Qwen2VlRope.FrameSegments([new GridThw(2, 3, 4), new GridThw(1, 3, 3)]));
    }
}
