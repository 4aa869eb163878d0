using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Gemma4's text model where no valid catalog scenario looks: the tensor-parallel refusals of its attention, a weight too
/// short for the config, a KV cache out of step, a sequence's capacity and rewind with KV-shared layers, the model
/// prefix (given, or found in a gemma4 checkpoint). Each test is the bug report of Stryker.NET mutants of
/// src/Engine/Models/Gemma4/{Gemma4Attention,Gemma4ForCausalLM}.cs that survived the catalog (notes/issue-21-mutgemma4.md).
/// </summary>
public class Gemma4ModelMutationTests
{
    private static string ModelDir(string name) => Path.Combine(Fixtures.DefaultDirectory(), "models", name);

    /// <summary>A checkpoint seen through <paramref name="map"/>: a name it maps to null does not exist.</summary>
    private sealed class Mapped(IWeightSource inner, Func<string, string?> map, Func<string, Tensor, Tensor>? edit = null) : IWeightSource
    {
        public bool Contains(string n) => map(n) is { } m && inner.Contains(m);
        public Tensor Get(string n) => map(n) is { } m ? (edit is null ? inner.Get(m) : edit(n, inner.Get(m))) : throw new KeyNotFoundException(n);
    }

    /// <summary>A weight source that must not be read: the refusals come before any weight.</summary>
    private sealed class NoWeights : IWeightSource
    {
        public bool Contains(string n) => false;
        public Tensor Get(string n) => throw new InvalidOperationException($"read {n} before refusing the layout");
    }

    private static string RefusalAt(int tp, Gemma4TextConfig config)
    {
        var e = Assert.ThrowsAny<Exception>(() => ThreadWorld.Run(tp, rank =>
            _ = new Gemma4Attention(new NoWeights(), "model.layers.0.self_attn", config, 0, ThreadWorld.Layout(rank, tp, 1)), TimeSpan.FromSeconds(30)));
        return e.ToString();
    }

    [Fact]
    public void Attention_heads_tensor_parallelism_cannot_split_or_replicate_are_refused_naming_the_layer()
    {
        var config = Gemma4ForCausalLM.LoadConfig(ModelDir("tiny-gemma4-moe-fp32"));   // layer 0: sliding, 2 heads, 1 kv head
        Assert.Contains("model.layers.0.self_attn: 3 attention heads are not divisible by the tensor-parallel size 2",
            RefusalAt(2, config with { NumAttentionHeads = 3, NumKeyValueHeads = 1 }));
        // more kv heads than ranks, not a multiple: cannot be split
        Assert.Contains("model.layers.0.self_attn: 3 kv heads cannot be split or replicated over tensor-parallel size 2",
            RefusalAt(2, config with { NumAttentionHeads = 6, NumKeyValueHeads = 3 }));
        // fewer kv heads than ranks, not a divisor: cannot be replicated evenly
        Assert.Contains("model.layers.0.self_attn: 3 kv heads cannot be split or replicated over tensor-parallel size 4",
            RefusalAt(4, config with { NumAttentionHeads = 12, NumKeyValueHeads = 3 }));
        // a layout that fits goes on to read the weights
        Assert.Contains("read model.layers.0.self_attn.q_proj.weight before refusing the layout",
            RefusalAt(4, config with { NumAttentionHeads = 4, NumKeyValueHeads = 2 }));
    }

    /// <summary>One sliding layer's attention on random weights, at tensor-parallel size <paramref name="tp"/>: [3, 64].</summary>
    private static Tensor AttentionAt(int tp, Gemma4TextConfig config, IWeightSource weights, Tensor x)
    {
        var (cos, sin) = Rotary.CosSin(Gemma4ForCausalLM.InvFreq(config, "sliding_attention"), Tensor.Arange(3), DType.Float32);   // [1, 3, head_dim], as the model's
        return ThreadWorld.Run(tp, rank =>
        {
            var attention = new Gemma4Attention(weights, "a", config, 0, ThreadWorld.Layout(rank, tp, 1));
            var cache = new KvCache(attention.LocalKvHeads, attention.HeadDim, 8, DType.Float32);
            return attention.Forward(x, cos, sin, [cache], [(0, 3, 0)]);
        }, TimeSpan.FromSeconds(60))[0];
    }

    [Theory]
    [InlineData(4, 4, 2)]   // kv heads split: rank 1 takes kv heads 2-3 (v_proj rows from 2 * head_dim) and q heads 2-3
    [InlineData(4, 2, 4)]   // kv heads replicated: ranks 2 and 3 take kv head 1 (r * kv_heads / tp)
    public void Each_rank_takes_its_own_heads_so_tensor_parallel_attention_equals_one_rank(int heads, int kvHeads, int tp)
    {
        // The catalog's layers have 2 heads and 1 or 2 kv heads, where a rank's offset cannot tell r * n from r / n.
        var config = Gemma4ForCausalLM.LoadConfig(ModelDir("tiny-gemma4-e2b-like-fp32")) with { NumAttentionHeads = heads, NumKeyValueHeads = kvHeads };
        int hd = config.HeadDim, d = config.HiddenSize;
        ulong seed = 40;
        Tensor Random(params int[] shape) => Elementwise.Mul(Tensor.Randn(DType.Float32, seed++, shape), 0.2);
        var weights = new DictionaryWeights(new Dictionary<string, Tensor>
        {
            ["a.q_proj.weight"] = Random(heads * hd, d), ["a.k_proj.weight"] = Random(kvHeads * hd, d),
            ["a.v_proj.weight"] = Random(kvHeads * hd, d), ["a.o_proj.weight"] = Random(d, heads * hd),
            ["a.q_norm.weight"] = Random(hd), ["a.k_norm.weight"] = Random(hd),
        });
        var x = Random(3, d);
        var one = AttentionAt(1, config, weights, x).ToFloatArray();
        var split = AttentionAt(tp, config, weights, x).ToFloatArray();
        for (int i = 0; i < one.Length; i++)
            Assert.True(Math.Abs(one[i] - split[i]) <= 1e-5 + 1e-4 * Math.Abs(one[i]), $"element {i}: TP={tp} {split[i]} against one rank's {one[i]}");
    }

    [Fact]
    public void A_projection_with_fewer_rows_than_the_config_implies_is_refused_naming_the_weight_and_the_rows()
    {
        var dir = ModelDir("tiny-gemma4-moe-fp32");
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        using var checkpoint = Checkpoint.Open(dir);
        var weights = new Mapped(new CheckpointWeights(checkpoint), n => n,
            (n, t) => n == "model.layers.0.self_attn.q_proj.weight" ? t.Narrow(0, 0, 24).Contiguous() : t);   // [24, 64] of [32, 64]
        var e = Assert.Throws<ArgumentException>(() => new Gemma4Attention(weights, "model.layers.0.self_attn", config, 0, ParallelContext.Single));
        Assert.Equal("model.layers.0.self_attn.q_proj.weight [24, 64] has no rows [0, 32)", e.Message);
        // the rows of the second rank of TP=2 are [16, 32): a weight of exactly 32 rows fits
        var fits = new Mapped(new CheckpointWeights(checkpoint), n => n);
        ThreadWorld.Run(2, rank => _ = new Gemma4Attention(fits, "model.layers.0.self_attn", config, 0, ThreadWorld.Layout(rank, 2, 1)), TimeSpan.FromSeconds(30));
    }

    [Fact]
    public void A_kv_cache_out_of_step_with_the_sequence_is_refused_before_attending()
    {
        var dir = ModelDir("tiny-gemma4-e2b-like-fp32");            // layer 0 writes its cache, layer 2 shares layer 0's
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        using var checkpoint = Checkpoint.Open(dir);
        var model = new Gemma4ForCausalLM(new CheckpointWeights(checkpoint), config, ParallelContext.Single);
        var x = Tensor.Zeros(DType.Float32, 3, config.HiddenSize);
        var rope = Tensor.Zeros(DType.Float32, 1, 3, config.HeadDim);
        var own = new KvCache(1, config.HeadDim, 16, DType.Float32);
        own.Reset(2);                                                  // holds 2 positions; the sequence is at 0
        var e = Assert.Throws<InvalidOperationException>(() => model.Layers[0].SelfAttn.Forward(x, rope, rope, [own], [(0, 3, 0)]));
        Assert.Equal("the KV cache holds 2 positions where 0 + 0 were expected (KV sharing out of step)", e.Message);
        // a shared layer reads its source's cache after the source appended this step's rows: past + count
        var source = new KvCache(1, config.HeadDim, 16, DType.Float32);
        source.Reset(4);
        e = Assert.Throws<InvalidOperationException>(() => model.Layers[2].SelfAttn.Forward(x, rope, rope, [source], [(0, 3, 0)]));
        Assert.Equal("the KV cache holds 4 positions where 0 + 3 were expected (KV sharing out of step)", e.Message);
        // inside a decoder layer the failure is named at the layer's self_attn (the module a report points at)
        var failed = Assert.Throws<Harness.Engine.Capture.ModuleFailedException>(() =>
            model.Layers[0].Forward(x, Tensor.Zeros(DType.Float32, 3, config.HiddenSizePerLayerInput), rope, rope, [own], [(0, 3, 0)]));
        Assert.Equal("model.layers.0.self_attn", failed.Module);
    }

    [Fact]
    public void A_sequence_with_kv_shared_layers_has_its_capacity_rewinds_every_cache_and_decodes_the_same_again()
    {
        var dir = ModelDir("tiny-gemma4-e2b-like-fp32");
        using var checkpoint = Checkpoint.Open(dir);
        var model = new Gemma4ForCausalLM(new CheckpointWeights(checkpoint), Gemma4ForCausalLM.LoadConfig(dir), ParallelContext.Single);
        var seq = model.NewSequence(10);
        Assert.Equal(10, seq.Capacity);                                // layers 2 and 3 hold no cache of their own
        // every layer shared (num_kv_shared_layers = num_hidden_layers): no cache at all, capacity 0, and the forward
        // refused naming layer_types (no earlier layer to share from)
        var allShared = new Gemma4ForCausalLM(new CheckpointWeights(checkpoint), Gemma4ForCausalLM.LoadConfig(dir) with { NumKvSharedLayers = 4 },
            ParallelContext.Single);
        var none = allShared.NewSequence(10);
        Assert.Equal(0, none.Capacity);
        var refused = Assert.Throws<Harness.Engine.Config.ConfigException>(() => allShared.Forward(none, Tensor.FromArray(new long[] { 7 }, 1)));
        Assert.Contains("layer_types layer 0 (sliding_attention) shares K/V but no earlier non-shared layer has that type", refused.Message);
        var prompt = Tensor.FromArray(new long[] { 7, 8, 9, 10, 11 }, 5);
        var first = model.Forward(seq, prompt);
        Assert.Equal(5, seq.Position);
        seq.Rewind(0);
        Assert.Equal(0, seq.Position);
        Assert.True(model.Forward(seq, prompt).BitwiseEquals(first), "a rewound sequence does not decode the prompt as a fresh one");
        // the decoder over it: a second sequence in the same caches, and the graph state cleared on every cache
        var decoder = new Gemma4TextDecoder(model);
        decoder.StartSequence(10);
        var again = decoder.Prefill(prompt, logitsToKeep: 0);
        decoder.StartSequence(8);
        Assert.True(decoder.Prefill(prompt, logitsToKeep: 0).BitwiseEquals(again));
        Assert.True(again.BitwiseEquals(first));
    }

    [Fact]
    public void The_text_decoder_keeps_its_caches_unless_it_must_grow_and_hands_the_graph_steps_position_to_every_cache()
    {
        var dir = ModelDir("tiny-gemma4-e2b-like-fp32");
        using var checkpoint = Checkpoint.Open(dir);
        var decoder = new Gemma4TextDecoder(new Gemma4ForCausalLM(new CheckpointWeights(checkpoint), Gemma4ForCausalLM.LoadConfig(dir), ParallelContext.Single));
        Assert.Equal("StartSequence first", Assert.Throws<InvalidOperationException>(() => decoder.Sequence).Message);
        decoder.StartSequence(10);
        var first = decoder.Sequence;
        decoder.StartSequence(10);                                     // the same size: the same caches (a captured graph's addresses)
        Assert.Same(first, decoder.Sequence);
        decoder.StartSequence(6);                                      // smaller: kept, rewound
        Assert.Same(first, decoder.Sequence);
        Assert.Equal(10, decoder.CacheCapacity);
        Assert.Equal("a sequence needs at least one position, got 0", Assert.Throws<ArgumentException>(() => decoder.StartSequence(0)).Message);
        decoder.StartSequence(12);                                     // larger: grown
        Assert.Equal(12, decoder.CacheCapacity);
        // a graph decoder's step: its device position reaches every cache, of the sequence there and of one grown later
        Assert.Equal("DeviceForward needs a DeviceStep", Assert.Throws<InvalidOperationException>(() => decoder.DeviceForward(Tensor.FromArray(new long[] { 7 }, 1))).Message);
        var step = new DeviceStep(Tensor.FromArray(new long[] { 0 }, 1), Tensor.FromArray(new long[] { 0 }, 1));
        decoder.DeviceStep = step;
        Assert.All(decoder.Sequence.Caches.OfType<KvCache>(), c => Assert.Same(step.Position, c.DevicePosition));
        decoder.StartSequence(20);
        Assert.All(decoder.Sequence.Caches.OfType<KvCache>(), c => Assert.Same(step.Position, c.DevicePosition));
        decoder.DeviceStep = null;
        Assert.All(decoder.Sequence.Caches.OfType<KvCache>(), c => Assert.Null(c.DevicePosition));
    }

    [Fact]
    public void The_language_model_of_a_gemma4_checkpoint_is_found_under_model_language_model_or_where_the_caller_says()
    {
        var dir = ModelDir("tiny-gemma4-moe-mm-fp32");
        var config = Gemma4ForCausalLM.LoadConfig(dir);
        using var checkpoint = Checkpoint.Open(dir);
        var weights = new CheckpointWeights(checkpoint);
        var found = new Gemma4ForCausalLM(weights, config, ParallelContext.Single);
        Assert.Equal("model.language_model.", found.ModelPrefix);
        var prompt = Tensor.FromArray(new long[] { 7, 8, 9 }, 3);
        var logits = found.Forward(found.NewSequence(), prompt);
        // the same tensors under another prefix, named by the caller (the checkpoint's own prefix is then not there)
        var renamed = new Mapped(weights, n => n.StartsWith("text.", StringComparison.Ordinal) ? "model.language_model." + n["text.".Length..]
            : n == "lm_head.weight" ? n : null);
        var given = new Gemma4ForCausalLM(renamed, config, ParallelContext.Single, modelPrefix: "text.");
        Assert.Equal("text.", given.ModelPrefix);
        Assert.True(given.Forward(given.NewSequence(), prompt).BitwiseEquals(logits));
    }
}
