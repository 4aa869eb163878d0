using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma4ForConditionalGeneration's multimodal embedders where the catalog does not look: which checkpoint makes them
/// (a config with a tower but no embedder weights), the eps they read from each tower's config (a tiny model's
/// activations are too large for 2e-6 against 1e-6 to move a verdict), their tensor-parallel input (full width unless
/// the fault option says otherwise, with or without options), and the refusals naming the modality. Each test is the
/// bug report of Stryker.NET mutants of src/Engine/Models/Gemma4/Gemma4ForConditionalGeneration.cs that survived the
/// catalog (notes/issue-21-mutgemma4.md).
/// </summary>
public class Gemma4MultimodalMutationTests
{
    private static readonly string Dir = Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-gemma4-e2b-like-mm-fp32");

    private static HfConfig Config(Action<JsonObject>? edit = null)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, "config.json")))!.AsObject();
        edit?.Invoke(json);
        return HfConfig.Parse(json.ToJsonString(), "config.json");
    }

    /// <summary>The checkpoint without the tensors whose names start with <paramref name="hidden"/>.</summary>
    private sealed class Without(IWeightSource inner, string hidden) : IWeightSource
    {
        public bool Contains(string n) => !n.StartsWith(hidden, StringComparison.Ordinal) && inner.Contains(n);
        public Tensor Get(string n) => n.StartsWith(hidden, StringComparison.Ordinal) ? throw new KeyNotFoundException(n) : inner.Get(n);
    }

    /// <summary>Small soft tokens (RMS 1e-4), where the norm's eps (1e-6 against the towers' 2e-6, 3e-6) is most of the denominator.</summary>
    private static Tensor Small(ulong seed, params int[] shape) => Elementwise.Mul(Tensor.Randn(DType.Float32, seed, shape), 1e-4);

    [Fact]
    public void Each_embedder_normalises_with_its_own_towers_rms_norm_eps()
    {
        using var checkpoint = Checkpoint.Open(Dir);
        var weights = new CheckpointWeights(checkpoint);
        var config = Config();
        var model = new Gemma4ForConditionalGeneration(weights, config, ParallelContext.Single);
        int vision = config.GetInt("vision_config.hidden_size"), audio = config.GetInt("audio_config.output_proj_dims");
        var image = Small(5, 4, vision);
        var clip = Small(6, 1, 8, audio);
        var soft = model.SoftTokens(new Gemma4ForConditionalGeneration.TowerOutputs(image, clip, null));
        Assert.Equal(["image", "audio"], soft.Select(s => s.Modality).ToArray());
        Assert.Equal([TinyGemma4.ImageTokenId, TinyGemma4.AudioTokenId], soft.Select(s => s.TokenId).ToArray());
        var visionEmbedder = new Gemma4MultimodalEmbedder(weights, "model.embed_vision", 2e-6, ParallelContext.Single);   // vision_config.rms_norm_eps
        var audioEmbedder = new Gemma4MultimodalEmbedder(weights, "model.embed_audio", 3e-6, ParallelContext.Single);     // audio_config.rms_norm_eps
        Assert.True(soft[0].Embeddings.BitwiseEquals(visionEmbedder.Forward(image)), "the image's soft tokens are not embed_vision's with vision_config.rms_norm_eps");
        Assert.True(soft[1].Embeddings.BitwiseEquals(audioEmbedder.Forward(clip).Reshape(8, -1)), "the clip's soft tokens are not embed_audio's with audio_config.rms_norm_eps");
        var withDefault = new Gemma4MultimodalEmbedder(weights, "model.embed_vision", 1e-6, ParallelContext.Single);
        Assert.False(withDefault.Forward(image).BitwiseEquals(soft[0].Embeddings), "the eps does not matter at this scale: the test cannot tell");
    }

    [Fact]
    public void A_checkpoint_without_an_embedder_loads_for_text_and_refuses_that_modality_naming_it()
    {
        using var checkpoint = Checkpoint.Open(Dir);
        var config = Config();
        var noVision = new Gemma4ForConditionalGeneration(new Without(new CheckpointWeights(checkpoint), "model.embed_vision."), config, ParallelContext.Single);
        Assert.Null(noVision.EmbedVision);
        Assert.NotNull(noVision.EmbedAudio);
        var e = Assert.Throws<InvalidOperationException>(() => noVision.SoftTokens(new(Small(1, 4, config.GetInt("vision_config.hidden_size")), null, null)));
        Assert.Equal("the checkpoint has no vision embedder (model.embed_vision) or no vision_config", e.Message);
        var noAudio = new Gemma4ForConditionalGeneration(new Without(new CheckpointWeights(checkpoint), "model.embed_audio."), config, ParallelContext.Single);
        Assert.Null(noAudio.EmbedAudio);
        e = Assert.Throws<InvalidOperationException>(() => noAudio.SoftTokens(new(null, Small(1, 1, 8, config.GetInt("audio_config.output_proj_dims")), null)));
        Assert.Equal("the checkpoint has no audio embedder (model.embed_audio) or no audio_config", e.Message);
        // a config whose image_token_id is null (HF's None: absent, Gemma4Config's 258880) cannot place an image's soft tokens
        var noImageId = new Gemma4ForConditionalGeneration(new CheckpointWeights(checkpoint), Config(j => j["image_token_id"] = null), ParallelContext.Single);
        e = Assert.Throws<InvalidOperationException>(() => noImageId.SoftTokens(new(Small(1, 4, config.GetInt("vision_config.hidden_size")), null, null)));
        Assert.Equal("config.json has no image_token_id", e.Message);
    }

    /// <summary>Both embedders' soft tokens at tensor-parallel size 2 (rank 0's) with these options.</summary>
    private static IReadOnlyList<Gemma4SoftTokens> SoftTokensAt(int tp, Gemma4Options? options, Tensor? image, Tensor? clip) =>
        ThreadWorld.Run(tp, rank =>
        {
            using var checkpoint = Checkpoint.Open(Dir);
            var model = new Gemma4ForConditionalGeneration(new CheckpointWeights(checkpoint), Config(), ThreadWorld.Layout(rank, tp, 1), options: options);
            return model.SoftTokens(new(image, clip, null));
        }, TimeSpan.FromSeconds(60))[0];

    private static bool Close(Tensor a, Tensor b)
    {
        var (x, y) = (a.ToFloatArray(), b.ToFloatArray());
        return x.Length == y.Length && x.Zip(y).All(p => Math.Abs(p.First - p.Second) <= 1e-5 + 1e-4 * Math.Abs(p.First));
    }

    [Fact]
    public void Under_tensor_parallelism_both_embedders_take_the_full_width_soft_tokens_unless_the_fault_option_says_otherwise()
    {
        var config = Config();
        var image = Tensor.Randn(DType.Float32, 3, 4, config.GetInt("vision_config.hidden_size"));
        var clip = Tensor.Randn(DType.Float32, 4, 1, 8, config.GetInt("audio_config.output_proj_dims"));
        var one = SoftTokensAt(1, null, image, clip);
        foreach (var options in new[] { null, new Gemma4Options() })
        {
            var two = SoftTokensAt(2, options, image, clip);
            Assert.True(Close(one[0].Embeddings, two[0].Embeddings), $"image soft tokens at TP=2 (options {(options is null ? "null" : "default")}) differ from one rank's");
            Assert.True(Close(one[1].Embeddings, two[1].Embeddings), $"audio soft tokens at TP=2 (options {(options is null ? "null" : "default")}) differ from one rank's");
        }
        // the fault (input_is_parallel=True on full-width input: [n, mm] by a [.., mm/tp] shard) reaches both embedders
        var fault = new Gemma4Options { EmbedderInputIsParallel = true };
        Assert.Contains("model.embed_vision (rank 0) failed", Assert.ThrowsAny<Exception>(() => SoftTokensAt(2, fault, image, null)).ToString());
        Assert.Contains("model.embed_audio (rank 0) failed", Assert.ThrowsAny<Exception>(() => SoftTokensAt(2, fault, null, clip)).ToString());
    }
}
