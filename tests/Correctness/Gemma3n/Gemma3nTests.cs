using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Models.Gemma3n;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Gemma3n;

/// <summary>The Gemma3n pieces the catalog scenarios do not pin down by themselves.</summary>
[Collection(SerialCollection.Name)]
public class Gemma3nTests
{
    /// <summary>
    /// The bug as reported: vLLM's Gemma-3n under --tensor-parallel-size 2 dies in the multimodal embedder because its
    /// RowParallelLinear was built with input_is_parallel=True. E4B's widths (text hidden 2048, vision hidden 2048),
    /// random weights, 1024 soft tokens: rank 0 multiplies the full [1024, 2048] normed input by its [2048, 1024]
    /// shard, and the message is torch's, word for word, at model.embed_vision.embedding_projection. Only the embedder
    /// runs (the failure is in it, before any decoder layer).
    /// </summary>
    [Fact]
    public void E4B_embedder_at_tp2_with_input_is_parallel_fails_with_torchs_message()
    {
        const int text = 2048, vision = 2048, tokens = 1024;
        var weights = EmbedderWeights(vision, text, DType.Float32);
        var settings = new Gemma3nEmbedderSettings { JsonPath = "vision_config", HiddenSize = vision, VocabSize = 128, VocabOffset = 262144, RmsNormEps = 1e-6 };
        var soft = Tensor.Normal(DType.Float32, 5, 0, 1, tokens, vision);
        var ex = Assert.ThrowsAny<Exception>(() => ThreadWorld.Run(2, rank =>
        {
            var embedder = new Gemma3nMultimodalEmbedder(weights, "model.embed_vision", settings, ThreadWorld.Layout(rank, 2, 1),
                options: new Gemma3nOptions { EmbedderInputIsParallel = true });
            return embedder.ForwardSoft(soft);
        }, TimeSpan.FromSeconds(60)));
        var failure = EngineFailures.FindModule(ex);
        Assert.NotNull(failure);
        Assert.Equal("model.embed_vision.embedding_projection", failure!.Module);
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (1024x2048 and 1024x2048)", failure.InnerException!.Message);
    }

    /// <summary>With input_is_parallel=False (the default) the TP=2 embedder equals HF's dense computation on one device.</summary>
    [Fact]
    public void Embedder_at_tp2_equals_the_dense_embedder()
    {
        const int text = 32, vision = 24, tokens = 5;
        var weights = EmbedderWeights(vision, text, DType.Float32);
        var settings = new Gemma3nEmbedderSettings { JsonPath = "vision_config", HiddenSize = vision, VocabSize = 8, VocabOffset = 256, RmsNormEps = 4e-6 };
        var soft = Tensor.Normal(DType.Float32, 6, 0, 1, tokens, vision);
        var outputs = ThreadWorld.Run(2, rank =>
            new Gemma3nMultimodalEmbedder(weights, "model.embed_vision", settings, ThreadWorld.Layout(rank, 2, 1)).ForwardSoft(soft));
        // soft_embedding_norm -> embedding_projection -> embedding_post_projection_norm (no scale), densely
        var normed = Norms.RmsNorm(soft, weights.Get("model.embed_vision.soft_embedding_norm.weight"), 4e-6, RmsNormKind.GemmaScaled);
        var projected = new Linear(weights.Get("model.embed_vision.embedding_projection.weight")).Forward(normed);
        var expected = Norms.RmsNorm(projected, null, 4e-6, RmsNormKind.GemmaNoScale);
        foreach (var y in outputs)
        {
            var r = TensorComparer.Compare("embed_vision", y, expected, Tolerances.Float32Gemm);
            Assert.True(r.Passed, r.ToString());
        }
    }

    private static DictionaryWeights EmbedderWeights(int mm, int text, DType dtype) => new(new Dictionary<string, Tensor>
    {
        ["model.embed_vision.embedding.weight"] = Tensor.Normal(dtype, 1, 0, 1, 8, mm),
        ["model.embed_vision.hard_embedding_norm.weight"] = Tensor.Normal(dtype, 2, 1, 0.2f, mm),
        ["model.embed_vision.soft_embedding_norm.weight"] = Tensor.Normal(dtype, 3, 1, 0.2f, mm),
        ["model.embed_vision.embedding_projection.weight"] = Tensor.Normal(dtype, 4, 0, 1 / MathF.Sqrt(mm), text, mm),
    });

    /// <summary>
    /// _gaussian_topk against float64: cutoff = mean + std(unbiased=False) * Phi^-1(sparsity) per row, then
    /// relu(g - cutoff) keeps about the top (1 - sparsity) of each row.
    /// </summary>
    [Theory]
    [InlineData(0.95)]
    [InlineData(0.8)]
    [InlineData(0.6)]
    public void Gaussian_top_k_cutoff_matches_a_float64_computation(double sparsity)
    {
        const int rows = 7, n = 512;
        var g = Tensor.Normal(DType.Float32, 11, 0.3f, 2f, rows, n);
        var cutoff = Gemma3nMlp.GaussianTopKCutoff(g, sparsity).ToDoubleArray();
        var v = g.ToDoubleArray();
        double z = Float64Probit(sparsity);
        int kept = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = v.Skip(r * n).Take(n).ToArray();
            double mean = row.Average(), std = Math.Sqrt(row.Select(x => (x - mean) * (x - mean)).Average());
            double expected = mean + std * z;
            Assert.True(Math.Abs(cutoff[r] - expected) <= 1e-5 * (1 + Math.Abs(expected)), $"row {r}: {cutoff[r]} vs {expected}");
            kept += row.Count(x => x > expected);
        }
        Assert.InRange(kept / (double)(rows * n), (1 - sparsity) * 0.6, (1 - sparsity) * 1.4);
    }

    /// <summary>torch.distributions.Normal(0, 1).icdf: 0.95 -> 1.6448536, 0.5 -> 0, symmetric.</summary>
    [Fact]
    public void Normal_icdf_matches_known_quantiles()
    {
        Assert.Equal(1.6448536, Gemma3nMlp.NormalIcdf(0.95), 5);
        Assert.Equal(0.8416212, Gemma3nMlp.NormalIcdf(0.8), 5);
        Assert.Equal(0.0, Gemma3nMlp.NormalIcdf(0.5), 6);
        Assert.Equal(-Gemma3nMlp.NormalIcdf(0.9), Gemma3nMlp.NormalIcdf(0.1), 5);
    }

    // Phi^-1 by bisection on the float64 normal CDF (independent of the engine's erfinv).
    private static double Float64Probit(double p)
    {
        double lo = -10, hi = 10;
        for (int i = 0; i < 200; i++)
        {
            double mid = (lo + hi) / 2;
            if (0.5 * (1 + Harness.Engine.Kernels.Erf.Compute(mid / Math.Sqrt(2))) < p) lo = mid; else hi = mid;
        }
        return (lo + hi) / 2;
    }

    /// <summary>
    /// KV sharing as HF keys it: a shared layer (index >= num_hidden_layers - num_kv_shared_layers) reads the last
    /// non-shared layer of its own type. E4B: 35 layers, every 5th full, the last 15 shared: sliding layers read 18,
    /// full layers read 19 (vLLM: "last full attention layer is 1 before sharing, last sliding is 2 before").
    /// </summary>
    [Fact]
    public void Kv_shared_layers_read_the_last_non_shared_layer_of_their_type()
    {
        var types = Enumerable.Range(0, 35).Select(i => (i + 1) % 5 == 0 ? "full_attention" : "sliding_attention").ToArray();
        var config = Text(types, 15);
        for (int i = 0; i < 20; i++) Assert.Equal(i, config.KvSourceLayer(i));
        for (int i = 20; i < 35; i++) Assert.Equal(types[i] == "full_attention" ? 19 : 18, config.KvSourceLayer(i));
        var none = Text(["sliding_attention", "full_attention"], 0);
        Assert.Equal(1, none.KvSourceLayer(1));
    }

    private static Gemma3nTextSettings Text(string[] types, int shared) => new Gemma3nTextSettings
    {
        Base = TextFromTiny(),
        IntermediateSizes = [],
        VocabSizePerLayerInput = 1, HiddenSizePerLayerInput = 1, RmsNormEps = 1e-6, HiddenActivation = "silu",
        LayerTypes = types, SlidingWindow = 1, NumKvSharedLayers = shared, LaurelRank = 1, AltupNumInputs = 2,
        AltupActiveIdx = 0, AltupCorrectScale = true, ActivationSparsity = [], FinalLogitSoftcapping = null,
    } with { Base = TextFromTiny() with { NumHiddenLayers = types.Length } };

    private static TextConfig TextFromTiny() => HfConfig.Parse(TinyGemma3n.Config().ToJsonString(), "config.json").Text;

    /// <summary>The tiny model's config reads back every field the engine uses, each off HF's default.</summary>
    [Fact]
    public void Tiny_config_reads_every_field()
    {
        var c = Gemma3nConfig.Read(HfConfig.Parse(TinyGemma3n.Config().ToJsonString(), "config.json"));
        var t = c.Text;
        Assert.Equal("model.language_model", c.TextPrefix);
        Assert.Equal([64, 64, 48, 48], t.IntermediateSizes);
        Assert.Equal((256, 8, 3, 2, 4, 3, 1), (t.VocabSizePerLayerInput, t.HiddenSizePerLayerInput, t.SlidingWindow, t.NumKvSharedLayers, t.LaurelRank, t.AltupNumInputs, t.AltupActiveIdx));
        Assert.Equal([0.8, 0.6, 0.0, 0.0], t.ActivationSparsity);
        Assert.Equal(7.5, t.FinalLogitSoftcapping);
        Assert.Equal(2e-6, t.RmsNormEps);
        Assert.Equal(500.0, t.Base.RopeFor("sliding_attention").RopeTheta);
        Assert.Equal(20000.0, t.Base.RopeFor("full_attention").RopeTheta);
        Assert.Equal((24, 256, 4e-6), (c.Vision!.HiddenSize, c.Vision.VocabOffset, c.Vision.RmsNormEps));
        Assert.Equal((32, 264, 5e-6), (c.Audio!.HiddenSize, c.Audio.VocabOffset, c.Audio.RmsNormEps));
        Assert.Equal((257, 265, 3), (c.ImageTokenId, c.AudioTokenId, c.AudioSoftTokensPerImage));
    }

    /// <summary>Bad input is one line naming the file and the field.</summary>
    [Theory]
    [InlineData("text_config", "laurel_rank", null, "config.json: text_config.laurel_rank is missing")]
    [InlineData("text_config", "altup_active_idx", "7", "config.json: text_config.altup_active_idx is 7, expected 0 to 2")]
    [InlineData("text_config", "activation_sparsity_pattern", "[0.5]", "config.json: text_config.activation_sparsity_pattern has 1 entries for 4 layers")]
    [InlineData("vision_config", "vocab_offset", "\"x\"", "config.json: vision_config.vocab_offset must be an integer, but is a string (\"x\")")]
    [InlineData("", "audio_token_id", null, "config.json: audio_token_id is missing")]
    public void Config_errors_name_the_field(string section, string field, string? value, string message)
    {
        var json = TinyGemma3n.Config();
        var node = section.Length == 0 ? json : json[section]!.AsObject();
        if (value is null) node.Remove(field); else node[field] = JsonNode.Parse(value);
        var ex = Assert.Throws<ConfigException>(() => Gemma3nConfig.Read(HfConfig.Parse(json.ToJsonString(), "config.json")));
        Assert.Equal(message, ex.Message);
    }
}
