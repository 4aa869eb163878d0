using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Models.Llama;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// LlamaDecoderLayer (src/Engine/Models/Llama/LlamaDecoderLayer.cs) where the catalog only sees a verdict: which module a
/// failure is named at, and what two of its planted bugs plant. The catalog's fault scenarios check that each planted bug
/// is caught at its module; a mutant that makes the bug larger (or plants it in one branch of two) is caught as well, so
/// these tests pin each bug to its definition (notes/issue-21-mutllama.md). fp32 and bf16.
/// </summary>
public class LlamaLayerMutationTests
{
    private const int Hidden = 64;

    private static TextConfig Config() => HfConfig.Parse($$"""
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": {{Hidden}}, "intermediate_size": 160,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 96,
         "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "hidden_act": "silu", "max_position_embeddings": 128,
         "rope_parameters": {"rope_theta": 20000.0, "rope_type": "default"} }
        """, "ll/config.json").Text;

    private static Dictionary<string, Tensor> Weights(TextConfig config, DType dt)
    {
        var weights = new Dictionary<string, Tensor>();
        ulong seed = 70;
        foreach (var e in LlamaTensors.Expected(config).Tensors)
            weights[e.Name] = e.Name.EndsWith("layernorm.weight") || e.Name == "model.norm.weight"
                ? Tensor.Normal(DType.Float32, seed++, 1f, 0.2f, e.Shape).To(dt)          // norm weights around 1, as trained ones
                : Tensor.Normal(DType.Float32, seed++, 0f, 0.1f, e.Shape).To(dt);
        return weights;
    }

    /// <summary>Keeps every module's value (a clone: the model reuses its buffers).</summary>
    private sealed class Recorder : IActivationSink
    {
        public readonly Dictionary<string, Tensor> Values = [];
        public bool Wants(string module) => true;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Values[module] = value.Clone();
    }

    private static (Recorder Sink, Tensor Logits) Run(DType dt, LlamaOptions? options, long[] ids)
    {
        var config = Config();
        var sink = new Recorder();
        var model = new LlamaForCausalLM(new DictionaryWeights(Weights(config, dt)), config, ParallelContext.Single, sink, maxPositions: 16, options);
        var logits = model.Forward(Tensor.FromArray(ids, ids.Length), ids.Length)!;
        return (sink, logits);
    }

    private static readonly long[] Prompt = [5, 17, 2, 60, 33, 8];

    /// <summary>Wants one module; keeps the names of every record it is handed.</summary>
    private sealed class OneModule(string wanted) : IActivationSink
    {
        public readonly List<string> Recorded = [];
        public bool Wants(string module) => module == wanted;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) => Recorded.Add(module);
    }

    [Fact]
    public void Only_the_modules_a_sink_wants_are_recorded()
    {
        // a sink clones what it is handed (CaptureSink): a record nobody asked for costs a copy of the activation per
        // module and layer, and reaches a sink that did not ask for it
        var config = Config();
        foreach (var wanted in new[] { "model.layers.1.mlp", "model.layers.0", "model.embed_tokens", "lm_head" })
        {
            var sink = new OneModule(wanted);
            new LlamaForCausalLM(new DictionaryWeights(Weights(config, DType.Float32)), config, ParallelContext.Single, sink, maxPositions: 8)
                .Forward(Tensor.FromArray(new long[] { 3, 1, 4 }, 3), 3);
            Assert.Equal([wanted], sink.Recorded);
        }
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void A_self_attention_failure_is_named_at_the_layers_self_attn_module_on_its_rank(DType dt)
    {
        // the KV cache of 4 + 1 positions cannot take 3 more tokens after 4: the first attention that writes to it fails
        var config = Config();
        var model = new LlamaForCausalLM(new DictionaryWeights(Weights(config, dt)), config, ParallelContext.Single, maxPositions: 4);
        model.Forward(Tensor.FromArray(new long[] { 1, 2, 3, 4 }, 4), 4);
        var e = Assert.Throws<ModuleFailedException>(() => model.Forward(Tensor.FromArray(new long[] { 5, 6, 7 }, 3), 3));
        Assert.Equal("model.layers.0.self_attn", e.Module);
        Assert.Equal(0, e.WorldRank);
        Assert.StartsWith("model.layers.0.self_attn (rank 0) failed: ", e.Message);
        Assert.Contains("cache", e.InnerException!.Message);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void The_residual_scale_fault_scales_both_branches_by_1_plus_2_pow_minus_6_and_nothing_else(DType dt)
    {
        // layer 0's output = mlp * s + (self_attn * s + embeddings): the captures of the branches are before the scale
        const double s = 1 + 1.0 / 64;
        var (sink, _) = Run(dt, new LlamaOptions { ResidualBranchScale = s }, Prompt);
        var (clean, _) = Run(dt, null, Prompt);
        var v = sink.Values;
        Assert.Equal(clean.Values["model.embed_tokens"].ToFloatArray(), v["model.embed_tokens"].ToFloatArray());
        Assert.Equal(clean.Values["model.layers.0.self_attn"].ToFloatArray(), v["model.layers.0.self_attn"].ToFloatArray());  // unscaled capture
        var attn = v["model.layers.0.self_attn"].ToFloatArray();
        var mlp = v["model.layers.0.mlp"].ToFloatArray();
        var emb = v["model.embed_tokens"].ToFloatArray();
        var output = v["model.layers.0"].ToFloatArray();
        double tol = dt == DType.Float32 ? 1e-5 : 3e-2;
        double worst = 0, branch = 0;
        for (int i = 0; i < output.Length; i++)
        {
            double want = mlp[i] * s + (attn[i] * s + emb[i]);
            worst = Math.Max(worst, Math.Abs(output[i] - want));
            branch = Math.Max(branch, Math.Min(Math.Abs(attn[i]), Math.Abs(mlp[i])) * (s - 1));
        }
        Assert.True(worst <= tol, $"layer output off the scaled branches by {worst}");
        // without the scale on one branch the output moves by 2^-6 of it: far above the tolerance in fp32
        if (dt == DType.Float32) Assert.True(branch > 20 * tol, $"the branches are too small ({branch}) for the test to see a scale");
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void The_bf16_sum_of_squares_fault_is_llamas_rms_norm_with_each_partial_sum_rounded_to_bf16(DType dt)
    {
        // the planted precision bug, by its definition: ss = bf16(ss + x^2) in order; y = w * (x * 1/sqrt(ss/n + eps)).to(dtype),
        // in both of the layer's norm paths: the first layer's norm of the embeddings, and the add-then-norm of every later
        // norm (layer 1's input norm of layer 0's output, which is hidden + residual)
        var (sink, _) = Run(dt, new LlamaOptions { NormSumOfSquaresBf16 = true }, Prompt);
        var weights = Weights(Config(), dt);
        foreach (var (input, norm, weight) in new[]
                 {
                     ("model.embed_tokens", "model.layers.0.input_layernorm", "model.layers.0.input_layernorm.weight"),
                     ("model.layers.0", "model.layers.1.input_layernorm", "model.layers.1.input_layernorm.weight"),
                 })
        {
            var x = sink.Values[input].ToFloatArray();
            var w = weights[weight].ToFloatArray();
            var want = new float[x.Length];
            for (int r = 0; r < x.Length / Hidden; r++)
            {
                float ss = 0;
                for (int i = 0; i < Hidden; i++) ss = BFloat16.Round(ss + x[r * Hidden + i] * x[r * Hidden + i]);
                float inv = 1f / MathF.Sqrt(ss / Hidden + (float)1e-5);
                for (int i = 0; i < Hidden; i++)
                {
                    float normed = x[r * Hidden + i] * inv;
                    if (dt == DType.BFloat16) normed = BFloat16.Round(normed);
                    want[r * Hidden + i] = w[i] * normed;
                }
            }
            if (dt == DType.BFloat16) BFloat16.RoundInPlace(want);
            Assert.Equal(want, sink.Values[norm].ToFloatArray());
        }
        var got = sink.Values["model.layers.0.input_layernorm"].ToFloatArray();
        // and it is a precision loss only: within 2^-6 of the true norm, not equal to it
        var (clean, _) = Run(dt, null, Prompt);
        var right = clean.Values["model.layers.0.input_layernorm"].ToFloatArray();
        Assert.NotEqual(right, got);
        for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - right[i]) <= Math.Abs(right[i]) / 64 + 1e-6, $"element {i}: {got[i]} vs {right[i]}");
    }
}
