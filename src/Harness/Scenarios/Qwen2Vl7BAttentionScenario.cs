using System.Diagnostics.CodeAnalysis;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Models;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// Scenario 3 as it was reported: Qwen2-VL-7B-Instruct's text dims (hidden 3584, 28 heads, 4 kv heads, head_dim 128), a
/// 359-token prompt, TP=4, and the attention output viewed as (bsz, q_len, hidden_size): each rank holds 7 heads of
/// 128, so the view fails with exactly "shape '[1, 359, 3584]' is invalid for input of size 321664" at
/// model.language_model.layers.0.self_attn. Only the first attention runs, on random weights made here (no checkpoint,
/// no reference call: the numerics of this attention are checked by the tiny qwen2-vl scenarios).
/// </summary>
public sealed record Qwen2Vl7BAttentionScenario : TensorScenario
{
    public const string Module = "model.language_model.layers.0.self_attn";
    public const int Tokens = 359, TpSize = 4;

    [SetsRequiredMembers]
    public Qwen2Vl7BAttentionScenario(string? fault = null)
    {
        Id = BuildId("qwen2-vl-7b-attention", [$"tp{TpSize}", $"prompt-{Tokens}"], DType.Float32, fault);
        Model = "qwen2-vl-7b-attention";
        Layout = $"tp{TpSize}";
        DType = DType.Float32;
        Input = $"prompt-{Tokens}";
        Fault = fault;
        ExpectedFirstBadModule = fault is null ? null : Module;
        Tolerance = Policy.Name;
        ReferenceKey = "qwen2-vl-7b-attention";
        Description = $"Qwen2-VL-7B text dims, first attention only (random weights, seeds 1-8), {Tokens} tokens at TP={TpSize}" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    public override IReadOnlyList<string> Modules => [Module];
    public override TolerancePolicy Policy => Tolerances.Float32Gemm;

    protected override IReadOnlyDictionary<string, Tensor> SeededInputs() => new Dictionary<string, Tensor>();

    protected override IReadOnlyDictionary<string, Tensor> Reference(ReferenceClient client) => new Dictionary<string, Tensor>();

    protected override void Engine(IActivationSink sink)
    {
        var config = Qwen2Vl7B.Config();
        var weights = Qwen2Vl7B.FirstAttentionWeights();
        var hidden = Qwen2Vl7B.Uniform(8, 1f, Tokens, config.Text.HiddenSize);
        var (cos, sin) = Qwen2VlRope.MultimodalCosSin(Harness.Engine.Ops.Rotary.InvFreq(config.Text.Rope.RopeTheta, config.HeadDim),
            Qwen2VlRope.Sequential(0, Tokens), config.MropeSection, DType.Float32);
        var options = FaultMap.Plan(Fault, "qwen2-vl").Qwen2Vl;
        ThreadWorld.Run(TpSize, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, TpSize, 1);
            IWeightSource rankWeights = weights;
            IActivationSink rankSink = sink;
            using var gpu = CudaScenarios.OnGpu(Device, ref ctx, ref rankWeights, ref rankSink);   // --device cuda: this rank on the GPU
            try
            {
                var attention = new Qwen2VlAttention(rankWeights, Module, config, ctx, options);
                var cache = new KvCache(attention.LocalKvHeads, config.HeadDim, Tokens, DType.Float32, gpu is null ? null : Harness.Engine.Cuda.CudaDevice.Get());
                var output = attention.Forward(CudaScenarios.Input(Device, hidden)!, cos, sin, cache, Tokens);          // [359, 3584]
                rankSink.Record(Module, rank, output.Unsqueeze(0), ShardSpec.Whole);
            }
            catch (Exception e) when (e is not CollectiveException { Failure: CollectiveFailure.PeerFailed })
            {
                throw new ModuleFailedException(Module, rank, e);
            }
        }, TimeSpan.FromSeconds(120));
    }
}

/// <summary>Qwen2-VL-7B-Instruct's config (as released: flat text fields, legacy mrope rope_scaling) and random first-attention weights.</summary>
public static class Qwen2Vl7B
{
    public const string ConfigJson = """
        {
          "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
          "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
          "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-06, "tie_word_embeddings": false,
          "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "rope_theta": 1000000.0,
          "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
          "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
            "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
        }
        """;

    public static Qwen2VlConfig Config() => Qwen2VlConfig.From(HfConfig.Parse(ConfigJson, "Qwen2-VL-7B-Instruct/config.json"));

    /// <summary>Seeded uniform values in [-scale, scale): cheap for the 7B-sized matrices (29M values).</summary>
    public static Tensor Uniform(ulong seed, float scale, params int[] shape)
    {
        var rng = new SplitMix64(seed);
        var data = new float[shape.Aggregate(1, (a, b) => a * b)];
        for (int i = 0; i < data.Length; i++) data[i] = (2 * rng.NextFloat() - 1) * scale;
        return Tensor.FromArray(data, shape);
    }

    /// <summary>model.language_model.layers.0.self_attn's q/k/v (with bias) and o_proj at the 7B's dims, seeds 1-7.</summary>
    public static IWeightSource FirstAttentionWeights()
    {
        const string p = Qwen2Vl7BAttentionScenario.Module;
        int hidden = 3584, kv = 4 * 128;
        return new DictionaryWeights(new Dictionary<string, Tensor>
        {
            [p + ".q_proj.weight"] = Uniform(1, 0.02f, hidden, hidden),
            [p + ".q_proj.bias"] = Uniform(2, 0.02f, hidden),
            [p + ".k_proj.weight"] = Uniform(3, 0.02f, kv, hidden),
            [p + ".k_proj.bias"] = Uniform(4, 0.02f, kv),
            [p + ".v_proj.weight"] = Uniform(5, 0.02f, kv, hidden),
            [p + ".v_proj.bias"] = Uniform(6, 0.02f, kv),
            [p + ".o_proj.weight"] = Uniform(7, 0.02f, hidden, hidden),
        });
    }
}
