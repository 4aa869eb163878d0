using System.Text.Json.Nodes;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Llama;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Models;

[Trait(LiveReference.Tier, LiveReference.Live)]
public class LlamaSingleRankProbe(ITestOutputHelper output)
{
    private sealed class DictSink : IActivationSink
    {
        public readonly Dictionary<string, Tensor> Values = new();
        public bool Wants(string module) => true;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) { lock (Values) Values[module] = value.Clone(); }
    }

    [SkippableFact]
    public void Single_rank_llama_matches_HF()
    {
        var reference = LiveReference.Client();
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama",
            ["hidden_size"] = 64, ["intermediate_size"] = 128, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2, ["vocab_size"] = 200, ["max_position_embeddings"] = 256, ["rms_norm_eps"] = 1e-6,
            ["tie_word_embeddings"] = false, ["hidden_act"] = "silu",
        };
        var dir = reference.ScratchDirectory("llama-probe");
        reference.BuildModel(config, 7, DType.Float32, dir);
        var ids = Tensor.FromArray(new long[] { 1, 5, 9, 33, 2, 100, 150 }, 7);
        var modules = new[] { "model.embed_tokens", "model.layers.0.input_layernorm", "model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.0", "model.layers.1", "model.norm", "lm_head" };
        var r = reference.Forward(dir, DType.Float32, ids.Unsqueeze(0), modules);
        using var ckpt = Checkpoint.Open(dir);
        var hf = HfConfig.Load(Path.Combine(dir, "config.json"));
        var sink = new DictSink();
        var model = new LlamaForCausalLM(new CheckpointWeights(ckpt), hf.Text, ParallelContext.Single, sink);
        model.Forward(ids, 7);
        foreach (var m in modules)
        {
            var c = TensorComparer.Compare(m, sink.Values[m], r.Captured[m], Tolerances.Float32Gemm);
            output.WriteLine(c.ToString());
        }
        var gen = reference.Generate(dir, DType.Float32, ids.Unsqueeze(0), 5, 3);
        var model2 = new LlamaForCausalLM(new CheckpointWeights(ckpt), hf.Text, ParallelContext.Single);
        var mine = model2.Generate(ids, 5, 3);
        output.WriteLine($"hf tokens {string.Join(",", gen.Tokens)}; engine {string.Join(",", mine.Tokens)}");
        Assert.Equal(gen.Tokens, mine.Tokens);
    }
}
