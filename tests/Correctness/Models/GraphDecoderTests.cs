using Harness.Bench;
using Harness.Engine.Capture;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// What the graph decoder's families share off the GPU (the GPU side is check-gpu's *-graph-decode-* checks): every
/// family opens as an <see cref="IGraphDecodable"/> whose plain loop is the family's own generation, Gemma4's one-sequence
/// decoder reuses its caches bit for bit, and the graph decoder refuses what it cannot replay with the reason.
/// </summary>
public class GraphDecoderTests
{
    private static string Model(string name) => Path.Combine(Fixtures.DefaultDirectory(), "models", name);

    private static readonly long[] Prompt = [1, 17, 42, 99, 5, 23, 61];

    public static TheoryData<string> Models => ["tiny-llama-fp32", "tiny-gemma3n-fp32", "tiny-gemma4-e2b-like-fp32", "tiny-gemma4-e2b-like-mm-fp32", "tiny-gemma4-moe-fp32", "tiny-qwen2-vl-fp32"];

    /// <summary>The bench and the GPU checks open each family as one decoder: its plain loop run twice in the same
    /// model (the second sequence in the caches of the first) gives the same bits, and equals the family's own Generate.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void A_family_opened_for_graph_decoding_decodes_as_its_own_generate(string name)
    {
        using var g = GraphModel.Open(Model(name), gpu: null, dtype: null, positions: 8);
        var request = new DecodeRequest(5, 3);
        var first = g.Generate(g.Model, Prompt, request);
        var second = g.Generate(g.Model, Prompt, request);
        Assert.Null(DecodeSelfCheck.Differ(first, second));
        Assert.Equal(Prompt.Length + 4, g.Model.Position);
        Generation own;
        using (var checkpoint = Checkpoint.Open(Model(name)))
        {
            var weights = new CheckpointWeights(checkpoint);
            own = g.Family switch
            {
                "gemma4" => new Gemma4ForCausalLM(weights, Gemma4ForCausalLM.LoadConfig(Model(name)), Harness.Engine.Distributed.ParallelContext.Single)
                    .Generate(Tensor.FromArray(Prompt, Prompt.Length), 5, 3),
                _ => first,                                    // Llama, Gemma3n and Qwen2-VL are their own decoders
            };
        }
        Assert.Null(DecodeSelfCheck.Differ(own, first));
    }

    /// <summary>A one-sequence Gemma4 decoder asked for more positions than its caches hold gets new ones (a graph then
    /// recaptures), and one asked for fewer keeps them.</summary>
    [Fact]
    public void Gemma4s_decoder_reallocates_its_caches_only_to_grow()
    {
        using var g = GraphModel.Open(Model("tiny-gemma4-e2b-like-fp32"), gpu: null, dtype: null, positions: 8);
        g.Model.StartSequence(20);
        Assert.Equal(20, g.Model.CacheCapacity);
        g.Model.StartSequence(12);
        Assert.Equal(20, g.Model.CacheCapacity);
        g.Model.StartSequence(30);
        Assert.Equal(30, g.Model.CacheCapacity);
    }

    /// <summary>Gemma4's MoE block used to route on the host (the expert ids read back) and the graph decoder refused it;
    /// its one-token step now runs from device state (Gemma4Experts.ForwardIndexed), so nothing but the GPU is missing.</summary>
    [Fact]
    public void The_graph_decoder_no_longer_refuses_a_moe_gemma4_only_a_host_model()
    {
        using var g = GraphModel.Open(Model("tiny-gemma4-moe-fp32"), gpu: null, dtype: null, positions: 8);
        Assert.Null(g.Model.GraphUnsupported);
        Assert.Contains("weights are on a GPU", Assert.Throws<ArgumentException>(() => new CudaGraphDecoder(g.Model)).Message);
    }

    /// <summary>A replay runs no host code, so a model that records activations is refused (never a graph that silently
    /// records nothing), and a model on the host is refused with what it needs.</summary>
    [Fact]
    public void The_graph_decoder_refuses_a_recording_model_and_a_host_model()
    {
        var dir = Model("tiny-llama-fp32");
        using var checkpoint = Checkpoint.Open(dir);
        var config = Harness.Engine.Config.HfConfig.Load(Path.Combine(dir, "config.json")).Text;
        var recording = new Harness.Engine.Models.Llama.LlamaForCausalLM(new CheckpointWeights(checkpoint), config,
            Harness.Engine.Distributed.ParallelContext.Single, new RecordingSink());
        Assert.Contains("records no activations", Assert.Throws<NotSupportedException>(() => new CudaGraphDecoder(recording)).Message);
        var host = new Harness.Engine.Models.Llama.LlamaForCausalLM(new CheckpointWeights(checkpoint), config, Harness.Engine.Distributed.ParallelContext.Single);
        Assert.Contains("weights are on a GPU", Assert.Throws<ArgumentException>(() => new CudaGraphDecoder(host)).Message);
    }

    /// <summary>The graph checks' comparison is exact: one other token, one other top-k id, or one bit of one
    /// log-probability is named (the planted differences), and equal generations pass.</summary>
    [Fact]
    public void The_graph_checks_comparison_names_one_token_one_id_and_one_logprob_bit()
    {
        static Generation Make(long token = 7, long id = 9, float lp = -0.25f) =>
            new([3, token], new long[,] { { 3, 4 }, { token, id } }, new float[,] { { -0.5f, -1f }, { -0.125f, lp } });
        Assert.Null(DecodeSelfCheck.Differ(Make(), Make()));
        Assert.Contains("tokens 3,8 differ from 3,7", DecodeSelfCheck.Differ(Make(), Make(token: 8)));
        Assert.Contains("step 1 top-2 id 10 differs from 9", DecodeSelfCheck.Differ(Make(), Make(id: 10)));
        float nextUp = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(-0.25f) + 1);
        Assert.Contains("step 1 top-2 logprob", DecodeSelfCheck.Differ(Make(), Make(lp: nextUp)));
    }

    private sealed class RecordingSink : IActivationSink
    {
        public bool Wants(string module) => true;
        public void Record(string module, int worldRank, Tensor value, ShardSpec shard) { }
    }
}
