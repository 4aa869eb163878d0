using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Linear and the tensor-parallel layers at what a valid checkpoint never shows: their refusals and messages, a
/// stacked weight's parts, the output-buffer paths in each dtype, the packed copy kept, a thread's scratch growing,
/// vocab edges and padding, biases declared and absent, kv heads replicated. The Stryker.NET mutants of
/// src/Engine/Layers and src/Engine/ParallelLayers that the catalog and ParallelLayerTests let through
/// (notes/issue-21-mutkernels.md).
/// </summary>
[Collection(SerialCollection.Name)]
public class LayersMutationTests
{
    private static readonly IProcessGroup One = new SingleProcessGroup();

    private static Tensor[] OnTp(int tp, Func<IProcessGroup, Tensor> body) =>
        ThreadWorld.Run(tp, rank => body(ThreadWorld.Layout(rank, tp, 1).Tp), TimeSpan.FromSeconds(30));

    // y = x W^T + b in float64, rounded once to float32 (the reference of a float32 Linear up to its summation order)
    private static float[] Reference(Tensor x, Tensor w, Tensor? b)
    {
        var xs = x.To(DType.Float32).ToFloatArray();
        var ws = w.To(DType.Float32).ToFloatArray();
        var bs = b?.To(DType.Float32).ToFloatArray();
        int k = w.Shape[1], n = w.Shape[0], m = xs.Length / k;
        var y = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = bs?[j] ?? 0;
                for (int c = 0; c < k; c++) s += (double)xs[i * k + c] * ws[j * k + c];
                y[i * n + j] = (float)s;
            }
        return y;
    }

    private static void Close(float[] want, Tensor got, string what, double tol = 1e-4)
    {
        var g = got.To(DType.Float32).ToFloatArray();
        Assert.Equal(want.Length, g.Length);
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - g[i]) <= tol * (1 + Math.Abs(want[i])), $"{what}: element {i} is {g[i]}, want {want[i]}");
    }

    // ---------------------------------------------------------------- Linear

    [Fact]
    public void A_linear_refuses_a_weight_that_is_not_a_matrix_and_an_input_of_the_wrong_width()
    {
        var ex = Assert.Throws<ArgumentException>(() => new Linear(Tensor.Zeros(DType.Float32, 2, 3, 4)));
        Assert.Equal("a Linear weight is [out_features, in_features], got shape [2, 3, 4]", ex.Message);
        var linear = new Linear(Tensor.Zeros(DType.Float32, 3, 4));
        Assert.Equal(4, linear.InFeatures);
        Assert.Equal(3, linear.OutFeatures);
        var wide = Assert.Throws<ArgumentException>(() => linear.Forward(Tensor.Zeros(DType.Float32, 2, 3, 5)));
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (6x5 and 4x3)", wide.Message);
        var empty = Assert.Throws<ArgumentException>(() => linear.Forward(Tensor.Zeros(DType.Float32, 3, 0)));
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (0x0 and 4x3)", empty.Message);
        // rank 3 whose dim 1 is the width: the check reads the last dim
        var last = Assert.Throws<ArgumentException>(() => linear.Forward(Tensor.Zeros(DType.Float32, 2, 4, 3)));
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (8x3 and 4x3)", last.Message);
    }

    [Fact]
    public void A_stacked_linear_refuses_no_parts_and_parts_of_another_width_rank_or_dtype()
    {
        var none = Assert.Throws<ArgumentException>(() => Linear.Stacked([]));
        Assert.Equal("a stacked Linear needs at least one weight", none.Message);
        var a = Tensor.Zeros(DType.Float32, 2, 4);
        void Refused(Tensor bad, string got)
        {
            var ex = Assert.Throws<ArgumentException>(() => Linear.Stacked([a, bad]));
            Assert.Equal($"the parts of a stacked Linear weight are [out_i, 4] of float32, got {got}", ex.Message);
        }
        Refused(Tensor.Zeros(DType.Float32, 3, 5), "float32 [3, 5]");
        Refused(Tensor.Zeros(DType.BFloat16, 3, 4), "bfloat16 [3, 4]");
        Refused(Tensor.Zeros(DType.Float32, 3, 4, 1), "float32 [3, 4, 1]");
        Refused(Tensor.Zeros(DType.BFloat16, 3, 5), "bfloat16 [3, 5]");
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void A_stacked_linear_is_the_concatenated_weights_product_and_keeps_one_concatenation(DType dtype)
    {
        // mutants: OutFeatures as the largest part's rows, the lazy concatenation made again on every read
        var p0 = Tensor.Uniform(dtype, 1, -1f, 1f, 3, 8);
        var p1 = Tensor.Uniform(dtype, 2, -1f, 1f, 5, 8);
        var b = Tensor.Uniform(dtype, 3, -1f, 1f, 8);
        var x = Tensor.Uniform(dtype, 4, -1f, 1f, 2, 8);
        var stacked = Linear.Stacked([p0, p1], b);
        Assert.Equal(8, stacked.OutFeatures);
        Assert.Equal(8, stacked.InFeatures);
        var full = new Linear(Tensor.Cat([p0, p1], 0), b);
        Assert.True(stacked.Forward(x).BitwiseEquals(full.Forward(x)), "stacked = concatenated");
        Assert.Same(stacked.Weight, stacked.Weight);
        Assert.True(stacked.Weight.BitwiseEquals(Tensor.Cat([p0, p1], 0)));
        var single = Linear.Stacked([p1]);
        Assert.True(single.Weight.BitwiseEquals(p1));
        Assert.Equal(5, single.OutFeatures);
    }

    [Fact]
    public void A_stacked_linear_of_host_parts_is_not_concatenated_when_it_is_made()
    {
        // mutants: Stacked's `parts.Count == 1 || !parts.All(OnHost)` negated or without its `!`: two host parts were
        // concatenated at once (a second resident copy of a fused qkv or gate_up weight: issue 22's host memory)
        var p0 = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 256, 256);
        var p1 = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 256, 256);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var stacked = Linear.Stacked([p0, p1]);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 64 * 1024, $"Stacked allocated {allocated} bytes for 512 KiB of parts");
        Assert.Equal(512, stacked.OutFeatures);
    }

    [Theory]
    [InlineData(DType.Float32, true)]
    [InlineData(DType.Float32, false)]
    [InlineData(DType.BFloat16, true)]
    [InlineData(DType.BFloat16, false)]
    [InlineData(DType.Float16, true)]
    [InlineData(DType.Float16, false)]
    public void An_output_buffer_gets_the_same_bits_as_a_fresh_result_in_every_dtype(DType dtype, bool bias)
    {
        // mutants: the buffer's checks, the packed path's buffer branch (float32 straight in, bf16 through the scratch
        // and rounded once), the bias rows' loop and offsets, the float16 path's copy into the buffer, the choice of path
        var w = Tensor.Uniform(dtype, 21, -1f, 1f, 6, 16);
        var b = bias ? Tensor.Uniform(dtype, 22, -1f, 1f, 6) : null;
        var linear = new Linear(w, b);
        var x = Tensor.Uniform(dtype, 23, -1f, 1f, 2, 3, 16);   // [2, 3, in]: 6 rows
        var fresh = linear.Forward(x);
        Assert.Equal(new[] { 2, 3, 6 }, fresh.ShapeArray);
        Assert.Equal(dtype, fresh.DType);
        Close(Reference(x, w, b), fresh, "fresh", dtype == DType.Float32 ? 1e-5 : 1e-2);
        var buffer = Tensor.Full(dtype, float.NaN, 36);
        var y = linear.Forward(x, buffer);
        Assert.Equal(new[] { 2, 3, 6 }, y.ShapeArray);
        Assert.True(y.BitwiseEquals(fresh), "buffer result");
        Assert.True(buffer.Reshape(2, 3, 6).BitwiseEquals(fresh), "the buffer holds the result");
        // an empty batch: no rows, no product
        var none = linear.Forward(Tensor.Zeros(dtype, 0, 16));
        Assert.Equal(new[] { 0, 6 }, none.ShapeArray);
        Assert.Equal(0, linear.Forward(Tensor.Zeros(dtype, 0, 16), Tensor.Zeros(dtype, 0)).NumEl);
    }

    [Fact]
    public void An_output_buffer_of_the_wrong_size_dtype_or_layout_is_refused()
    {
        var linear = new Linear(Tensor.Uniform(DType.Float32, 1, -1f, 1f, 3, 4));
        var x = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 2, 4);
        void Refused(Tensor buffer, string what)
        {
            var ex = Assert.Throws<ArgumentException>(() => linear.Forward(x, buffer));
            Assert.StartsWith("Linear output buffer ", ex.Message);
            Assert.EndsWith(" cannot hold [2, 3] of float32", ex.Message);
        }
        Refused(Tensor.Zeros(DType.Float32, 7), "too large");
        Refused(Tensor.Zeros(DType.Float32, 5), "too small");
        Refused(Tensor.Zeros(DType.BFloat16, 6), "another dtype");
        Refused(Tensor.Zeros(DType.Float32, 3, 2).T(), "not contiguous");
        linear.Forward(x, Tensor.Zeros(DType.Float32, 3, 2));   // six contiguous floats of any shape: accepted
    }

    [Fact]
    public void The_packed_weight_is_made_once_and_reused()
    {
        // mutants: the cache tests of Packed() (its layout, NR and kernel compared; the volatile write removed)
        var linear = new Linear(Tensor.Uniform(DType.Float32, 1, -1f, 1f, 8, 16));
        var p = linear.Packed();
        Assert.Same(p, linear.Packed());
        linear.Forward(Tensor.Uniform(DType.Float32, 2, -1f, 1f, 3, 16));
        Assert.Same(p, linear.Packed());
    }

    [Theory]
    [InlineData(DType.Float32, true)]
    [InlineData(DType.BFloat16, true)]
    [InlineData(DType.Float16, false)]
    public void The_first_host_forward_packs_the_weight_of_a_float32_or_bf16_linear(DType dtype, bool packs)
    {
        // mutants: UsesPackedWeight's `x.DType == W.DType` as `!=` (float32 and bf16 took the unpacked Matmul, whose
        // float32 bits are the same: only the packed copy, the class's one resident weight, tells)
        var linear = new Linear(Tensor.Uniform(dtype, 1, -1f, 1f, 8, 16));
        var packed = typeof(Linear).GetField("_packed", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!;
        Assert.Null(packed.GetValue(linear));
        linear.Forward(Tensor.Uniform(dtype, 2, -1f, 1f, 3, 16));
        Assert.Equal(packs, packed.GetValue(linear) is not null);
    }

    [Fact]
    public void A_threads_bf16_scratch_grows_with_the_largest_product()
    {
        // mutants: Float32Scratch's growth test and size (a fresh thread has none; the second product is larger)
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                var linear = new Linear(Tensor.Uniform(DType.BFloat16, 1, -1f, 1f, 8, 16), Tensor.Uniform(DType.BFloat16, 2, -1f, 1f, 8));
                foreach (int rows in new[] { 1, 3, 2, 40 })
                {
                    var x = Tensor.Uniform(DType.BFloat16, (ulong)(10 + rows), -1f, 1f, rows, 16);
                    var buffer = Tensor.Zeros(DType.BFloat16, rows, 8);
                    Assert.True(linear.Forward(x, buffer).BitwiseEquals(linear.Forward(x)), $"{rows} rows");
                }
            }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(failure);
    }

    [Fact]
    public void A_gated_mlp_is_down_of_act_gate_times_up()
    {
        var gate = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 6, 4);
        var up = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 6, 4);
        var down = Tensor.Uniform(DType.Float32, 3, -1f, 1f, 4, 6);
        var x = Tensor.Uniform(DType.Float32, 4, -1f, 1f, 3, 4);
        var mlp = GatedMlp.FromWeights(gate, up, down, "silu");
        var want = new Linear(down).Forward(Activation.ApplyGated(new Linear(gate).Forward(x), new Linear(up).Forward(x), ActivationKind.Silu));
        Assert.True(mlp.Forward(x).BitwiseEquals(want));
    }

    // ---------------------------------------------------------------- weights, sharding

    [Fact]
    public void Weight_sources_name_what_is_missing_and_convert_only_floating_point_tensors()
    {
        var dict = new DictionaryWeights(new Dictionary<string, Tensor> { ["a.weight"] = Tensor.Zeros(DType.Float32, 2, 2), ["a.bias"] = Tensor.Zeros(DType.Float32, 2) });
        var missing = Assert.Throws<KeyNotFoundException>(() => dict.Get("b.weight"));
        Assert.Equal("weight 'b.weight' is not among the 2 given", missing.Message);

        var noBias = new DictionaryWeights(new Dictionary<string, Tensor> { ["a.weight"] = Tensor.Zeros(DType.Float32, 2, 2) });
        var required = Assert.Throws<KeyNotFoundException>(() => WeightBias.Load(noBias, "a", true));
        Assert.Equal("a.bias is missing: the config says this layer has a bias (attention_bias / mlp_bias)", required.Message);
        Assert.Null(WeightBias.Load(noBias, "a", null));
        Assert.Null(WeightBias.Load(dict, "a", false));
        Assert.NotNull(WeightBias.Load(dict, "a", true));
        Assert.NotNull(WeightBias.Load(dict, "a", null));

        var dir = Path.Combine(Path.GetTempPath(), "harness-weights-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            SafetensorsWriter.Save(Path.Combine(dir, "model.safetensors"), new Dictionary<string, Tensor>
            {
                ["f"] = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 4, 2),
                ["h"] = Tensor.Uniform(DType.BFloat16, 2, -1f, 1f, 4, 2),
                ["i"] = Tensor.FromArray(new long[] { 1, 2, 3 }, 3),
            });
            using var ckpt = Checkpoint.Open(dir);
            var asBf16 = new CheckpointWeights(ckpt, DType.BFloat16);
            Assert.Equal(DType.BFloat16, asBf16.Get("f").DType);
            Assert.True(asBf16.Get("f").BitwiseEquals(ckpt.ReadTensor("f").To(DType.BFloat16)));
            Assert.Equal(DType.BFloat16, asBf16.Get("h").DType);
            Assert.True(asBf16.Get("h").BitwiseEquals(ckpt.ReadTensor("h")));
            Assert.Equal(DType.Int64, asBf16.Get("i").DType);
            Assert.Equal(DType.BFloat16, asBf16.GetRows("f", 1, 2).DType);
            Assert.True(asBf16.GetRows("f", 1, 2).BitwiseEquals(ckpt.ReadTensor("f").Narrow(0, 1, 2).To(DType.BFloat16)));
            Assert.Equal(new[] { 4, 2 }, asBf16.ShapeOf("f"));
            var stored = new CheckpointWeights(ckpt);
            Assert.Equal(DType.Float32, stored.Get("f").DType);
            Assert.True(stored.Contains("h"));
            Assert.False(stored.Contains("g"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Sharding_splits_evenly_names_an_uneven_split_and_rounds_up()
    {
        Assert.Equal((6, 3), Sharding.Range(12, 2, 4, "x"));
        Assert.Equal((0, 12), Sharding.Range(12, 0, 1, "x"));
        var ex = Assert.Throws<ArgumentException>(() => Sharding.Range(10, 0, 4, "what"));
        Assert.Equal("what: size 10 is not divisible by the tensor-parallel size 4", ex.Message);
        var full = Tensor.FromArray(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), 4, 3);
        Assert.Equal(new float[] { 6, 7, 8, 9, 10, 11 }, Sharding.Shard(full, 0, 1, 2, "w").ToFloatArray());
        var shard = Assert.Throws<ArgumentException>(() => Sharding.Shard(full, 1, 0, 2, "w"));
        Assert.Equal("w [4, 3] dim 1: size 3 is not divisible by the tensor-parallel size 2", shard.Message);
        Assert.Equal(128, Sharding.RoundUp(65, 64));
        Assert.Equal(64, Sharding.RoundUp(64, 64));
        Assert.Equal(64, Sharding.RoundUp(1, 64));
        Assert.Equal(0, Sharding.RoundUp(0, 64));
        Assert.Equal(256, Sharding.RoundUp(200, 128));
    }

    // ---------------------------------------------------------------- vocab-parallel embedding and LM head

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void The_vocab_parallel_embedding_gives_every_rank_the_full_rows_at_the_vocab_edges(int tp)
    {
        // vocab 150 pads to 256 at TP=2 (rank 1 holds 128..149 and zero padding) and to 256 at TP=4 (rank 3 holds none)
        const int vocab = 150;
        var table = Tensor.Uniform(DType.Float32, 1, -1f, 1f, vocab, 8);
        var ids = Tensor.FromArray(new long[] { 0, 63, 64, 127, 128, 149, 1, 128 }, 8);
        var want = Tensor.Cat(ids.ToInt64Array().Select(i => table.Narrow(0, (int)i, 1)).ToList(), 0);
        var outputs = OnTp(tp, g =>
        {
            var emb = new VocabParallelEmbedding(table, g, "embed");
            Assert.Equal(vocab, emb.VocabSize);
            Assert.Equal(tp == 1 ? 192 : 256, emb.PaddedVocabSize);
            int per = emb.PaddedVocabSize / tp;
            Assert.Equal(Math.Min(g.Rank * per, vocab), emb.Start);
            Assert.Equal(Math.Min(emb.Start + per, vocab), emb.End);
            Assert.Equal(new[] { emb.End - emb.Start, 8 }, emb.LocalWeight.ShapeArray);
            return emb.Forward(ids);
        });
        foreach (var o in outputs) Assert.True(o.BitwiseEquals(want), "rows");
    }

    [Fact]
    public void The_vocab_parallel_embedding_refuses_ids_outside_the_vocab_and_tables_that_are_not_matrices()
    {
        var emb = new VocabParallelEmbedding(Tensor.Uniform(DType.Float32, 1, -1f, 1f, 10, 4), One, "embed");
        var high = Assert.Throws<IndexOutOfRangeException>(() => emb.Forward(Tensor.FromArray(new long[] { 3, 10 }, 2)));
        Assert.Equal("token id 10 at position 1 is outside the vocabulary of 10", high.Message);
        var low = Assert.Throws<IndexOutOfRangeException>(() => emb.Forward(Tensor.FromArray(new long[] { -1 }, 1)));
        Assert.Equal("token id -1 at position 0 is outside the vocabulary of 10", low.Message);
        Assert.Equal(new[] { 2, 4 }, emb.Forward(Tensor.FromArray(new long[] { 0, 9 }, 2)).ShapeArray);

        var flat = Assert.Throws<ArgumentException>(() => new VocabParallelEmbedding(Tensor.Zeros(DType.Float32, 10), One, "embed"));
        Assert.Equal("embed.weight: an embedding table is [vocab, hidden], got shape [10]", flat.Message);
        var weights = new DictionaryWeights(new Dictionary<string, Tensor> { ["m.embed.weight"] = Tensor.Zeros(DType.Float32, 10, 2, 2), ["m.ok.weight"] = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 10, 4) });
        var cube = Assert.Throws<ArgumentException>(() => VocabParallelEmbedding.Load(weights, "m.embed", One));
        Assert.Equal("m.embed.weight: an embedding table is [vocab, hidden], got shape [10, 2, 2]", cube.Message);
        var loaded = VocabParallelEmbedding.Load(weights, "m.ok", One);
        Assert.True(loaded.Forward(Tensor.FromArray(new long[] { 7 }, 1)).BitwiseEquals(weights.Get("m.ok.weight").Narrow(0, 7, 1)));
    }

    [Theory]
    [InlineData(1, 150)]
    [InlineData(1, 128)]
    [InlineData(2, 150)]
    [InlineData(4, 150)]
    [InlineData(2, 256)]
    public void The_parallel_lm_head_gives_every_rank_the_full_logits(int tp, int vocab)
    {
        var table = Tensor.Uniform(DType.Float32, 1, -1f, 1f, vocab, 16);
        var hidden = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 3, 16);
        var want = Reference(hidden, table, null);
        var outputs = OnTp(tp, g =>
        {
            var head = new ParallelLMHead(table, g);
            Assert.Equal(vocab, head.VocabSize);
            Assert.Equal(Sharding.RoundUp(vocab, 64 * tp), head.PaddedVocabSize);
            return head.Forward(hidden);
        });
        foreach (var o in outputs)
        {
            Assert.Equal(new[] { 3, vocab }, o.ShapeArray);
            Close(want, o, $"logits tp {tp} vocab {vocab}", 1e-5);
        }
    }

    [Fact]
    public void The_lm_head_writes_into_the_buffer_only_at_tp_1_without_padding()
    {
        // mutants: the buffer condition (`&&` as `||`, each `==` as `!=`, forced either way)
        var hidden = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 3, 16);
        var even = new ParallelLMHead(Tensor.Uniform(DType.Float32, 1, -1f, 1f, 128, 16), One);
        var buffer = Tensor.Full(DType.Float32, float.NaN, 3, 128);
        var logits = even.Forward(hidden, buffer);
        Assert.True(buffer.BitwiseEquals(logits), "the logits are in the buffer");
        Assert.True(logits.BitwiseEquals(even.Forward(hidden)));

        var padded = new ParallelLMHead(Tensor.Uniform(DType.Float32, 1, -1f, 1f, 150, 16), One);
        var small = Tensor.Full(DType.Float32, float.NaN, 3, 150);   // the vocab's width, not the padded one: unused
        var l2 = padded.Forward(hidden, small);
        Assert.Equal(new[] { 3, 150 }, l2.ShapeArray);
        Assert.True(l2.BitwiseEquals(padded.Forward(hidden)));
    }

    // ---------------------------------------------------------------- column, row, merged, qkv

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Column_parallel_load_takes_the_bias_when_present_and_gathers_only_when_asked(int tp)
    {
        var w = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 8, 4);
        var b = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 8);
        var x = Tensor.Uniform(DType.Float32, 3, -1f, 1f, 2, 4);
        var withBias = new DictionaryWeights(new Dictionary<string, Tensor> { ["p.weight"] = w, ["p.bias"] = b });
        var noBias = new DictionaryWeights(new Dictionary<string, Tensor> { ["p.weight"] = w });
        var gathered = OnTp(tp, g => ColumnParallelLinear.Load(withBias, "p", g, gatherOutput: true).Forward(x));
        foreach (var o in gathered) Close(Reference(x, w, b), o, "gathered with bias", 1e-5);
        var local = OnTp(tp, g =>
        {
            var layer = ColumnParallelLinear.Load(noBias, "p", g);
            Assert.False(layer.GatherOutput);
            Assert.Equal(new[] { 8 / tp, 4 }, layer.Weight.ShapeArray);
            return layer.Forward(x);
        });
        var full = Reference(x, w, null);
        for (int r = 0; r < tp; r++)
        {
            int each = 8 / tp;
            var want = new float[2 * each];
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < each; j++) want[i * each + j] = full[i * 8 + r * each + j];
            Close(want, local[r], $"rank {r}'s columns", 1e-5);
        }
        var ex = Assert.Throws<ArgumentException>(() => new ColumnParallelLinear(Tensor.Zeros(DType.Float32, 3, 4), null, new FakeGroup(1, 2), false, "col"));
        Assert.Equal("col.weight [3, 4] dim 0: size 3 is not divisible by the tensor-parallel size 2", ex.Message);
        var exB = Assert.Throws<ArgumentException>(() => new ColumnParallelLinear(Tensor.Zeros(DType.Float32, 4, 4), Tensor.Zeros(DType.Float32, 3), new FakeGroup(1, 2), false, "col"));
        Assert.Equal("col.bias [3] dim 0: size 3 is not divisible by the tensor-parallel size 2", exB.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Row_parallel_adds_the_bias_once_slices_a_full_input_and_returns_the_partial_when_not_reducing(int tp)
    {
        var w = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 3, 8);
        var b = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 3);
        var x = Tensor.Uniform(DType.Float32, 3, -1f, 1f, 2, 8);
        var weights = new DictionaryWeights(new Dictionary<string, Tensor> { ["o.weight"] = w, ["o.bias"] = b });
        var full = OnTp(tp, g =>
        {
            var layer = RowParallelLinear.Load(weights, "o", g, inputIsParallel: false);
            Assert.Equal(8, layer.InFeatures);
            Assert.Equal(3, layer.OutFeatures);
            Assert.False(layer.InputIsParallel);
            Assert.True(layer.ReduceResults);
            return layer.Forward(x);
        });
        foreach (var o in full) Close(Reference(x, w, b), o, "full input", 1e-5);
        var partial = OnTp(tp, g => RowParallelLinear.Load(weights, "o", g, inputIsParallel: false, reduceResults: false).Forward(x));
        int each = 8 / tp;
        for (int r = 0; r < tp; r++)
        {
            var want = Reference(x.Narrow(-1, r * each, each), w.Narrow(1, r * each, each), r == 0 ? b : null);
            Close(want, partial[r], $"rank {r}'s partial", 1e-5);
        }
        var ex = Assert.Throws<ArgumentException>(() => new RowParallelLinear(Tensor.Zeros(DType.Float32, 3, 5), null, new FakeGroup(0, 2), true, true, "down"));
        Assert.Equal("down.weight [3, 5] dim 1: size 5 is not divisible by the tensor-parallel size 2", ex.Message);
        var layer1 = new RowParallelLinear(w, b, new FakeGroup(0, 2), false, true, "down");
        var exIn = Assert.Throws<ArgumentException>(() => layer1.Forward(Tensor.Zeros(DType.Float32, 2, 7)));
        Assert.Equal("RowParallelLinear input [2, 7] dim -1: size 7 is not divisible by the tensor-parallel size 2", exIn.Message);
    }

    [Fact]
    public void Row_parallel_at_tp_1_writes_into_the_buffer()
    {
        var w = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 3, 8);
        var x = Tensor.Uniform(DType.Float32, 3, -1f, 1f, 2, 8);
        var layer = new RowParallelLinear(w, null, One, true, true, "o");
        var buffer = Tensor.Full(DType.Float32, float.NaN, 2, 3);
        var y = layer.Forward(x, buffer);
        Assert.True(buffer.BitwiseEquals(y), "the result is in the buffer");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Merged_column_load_takes_all_biases_or_none_and_names_the_missing_ones(int tp)
    {
        var gate = Tensor.Uniform(DType.Float32, 1, -1f, 1f, 4, 6);
        var up = Tensor.Uniform(DType.Float32, 2, -1f, 1f, 4, 6);
        var gb = Tensor.Uniform(DType.Float32, 3, -1f, 1f, 4);
        var ub = Tensor.Uniform(DType.Float32, 4, -1f, 1f, 4);
        var x = Tensor.Uniform(DType.Float32, 5, -1f, 1f, 2, 6);
        var both = new DictionaryWeights(new Dictionary<string, Tensor> { ["g.weight"] = gate, ["u.weight"] = up, ["g.bias"] = gb, ["u.bias"] = ub });
        var outputs = OnTp(tp, g =>
        {
            var layer = MergedColumnParallelLinear.Load(both, ["g", "u"], g);
            Assert.Equal(new[] { 4 / tp, 4 / tp }, layer.LocalSizes);
            Assert.Equal(8 / tp, layer.LocalOutFeatures);
            return layer.Forward(x);
        });
        var gFull = Reference(x, gate, gb);
        var uFull = Reference(x, up, ub);
        int each = 4 / tp;
        for (int r = 0; r < tp; r++)
        {
            var want = new float[2 * 2 * each];
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < each; j++)
                {
                    want[i * 2 * each + j] = gFull[i * 4 + r * each + j];
                    want[i * 2 * each + each + j] = uFull[i * 4 + r * each + j];
                }
            Close(want, outputs[r], $"rank {r}: [gate shard | up shard]", 1e-5);
        }
        var noBias = OnTp(tp, g => MergedColumnParallelLinear.Load(both, ["g", "u"], g, bias: false).Forward(x));
        Close(Reference(x, gate, null).Take(each).ToArray(), noBias[0].Narrow(0, 0, 1).Narrow(-1, 0, each), "bias: false ignores the file's", 1e-5);

        var one = new DictionaryWeights(new Dictionary<string, Tensor> { ["g.weight"] = gate, ["u.weight"] = up, ["x.weight"] = up, ["u.bias"] = ub });
        var ex = Assert.Throws<KeyNotFoundException>(() => MergedColumnParallelLinear.Load(one, ["g", "u", "x"], One));
        Assert.Equal("g.bias, x.bias missing where the other parts have a bias", ex.Message);
        var ex2 = Assert.Throws<ArgumentException>(() => new MergedColumnParallelLinear([gate, Tensor.Zeros(DType.Float32, 3, 6)], new FakeGroup(0, 2), ["gate", "up"]));
        Assert.Equal("up.weight [3, 6] dim 0: size 3 is not divisible by the tensor-parallel size 2", ex2.Message);
        var ex3 = Assert.Throws<ArgumentException>(() => new MergedColumnParallelLinear([gate, up], new FakeGroup(0, 2), ["gate", "up"], [gb, Tensor.Zeros(DType.Float32, 3)]));
        Assert.Equal("up.bias [3] dim 0: size 3 is not divisible by the tensor-parallel size 2", ex3.Message);
    }

    private static DictionaryWeights Qkv(int heads, int kv, int hd, int hidden, bool qBias, bool kvBias)
    {
        var d = new Dictionary<string, Tensor>
        {
            ["q.weight"] = Tensor.Uniform(DType.Float32, 1, -1f, 1f, heads * hd, hidden),
            ["k.weight"] = Tensor.Uniform(DType.Float32, 2, -1f, 1f, kv * hd, hidden),
            ["v.weight"] = Tensor.Uniform(DType.Float32, 3, -1f, 1f, kv * hd, hidden),
        };
        if (qBias) d["q.bias"] = Tensor.Uniform(DType.Float32, 4, -1f, 1f, heads * hd);
        if (kvBias)
        {
            d["k.bias"] = Tensor.Uniform(DType.Float32, 5, -1f, 1f, kv * hd);
            d["v.bias"] = Tensor.Uniform(DType.Float32, 6, -1f, 1f, kv * hd);
        }
        return new DictionaryWeights(d);
    }

    [Theory]
    [InlineData(4, 2, 1, true, true)]    // kv split
    [InlineData(4, 2, 2, true, true)]    // kv split, one each
    [InlineData(4, 1, 2, false, false)]  // kv replicated
    [InlineData(8, 2, 4, true, false)]   // kv replicated over pairs of ranks; q with a bias, k/v without: unfused
    [InlineData(4, 4, 2, false, true)]   // unfused the other way
    public void Qkv_gives_each_rank_its_heads_and_its_kv_head_fused_or_not(int heads, int kv, int tp, bool qBias, bool kvBias)
    {
        const int hd = 4, hidden = 6;
        var weights = Qkv(heads, kv, hd, hidden, qBias, kvBias);
        var x = Tensor.Uniform(DType.Float32, 9, -1f, 1f, 3, hidden);
        var q = Reference(x, weights.Get("q.weight"), qBias ? weights.Get("q.bias") : null);
        var k = Reference(x, weights.Get("k.weight"), kvBias ? weights.Get("k.bias") : null);
        var v = Reference(x, weights.Get("v.weight"), kvBias ? weights.Get("v.bias") : null);
        bool fused = qBias == kvBias;
        ThreadWorld.Run(tp, rank =>
        {
            var g = ThreadWorld.Layout(rank, tp, 1).Tp;
            var layer = new QKVParallelLinear(weights, "q", "k", "v", heads, kv, hd, g);
            int lh = heads / tp, lkv = Math.Max(1, kv / tp), kvStart = kv >= tp ? rank * lkv : rank * kv / tp;
            Assert.Equal(lh, layer.LocalHeads);
            Assert.Equal(lkv, layer.LocalKvHeads);
            Assert.Equal(hd, layer.HeadDim);
            Assert.Equal(fused ? (lh + 2 * lkv) * hd : 0, layer.FusedWidth);
            var (qq, kk, vv) = layer.Forward(x);
            Close(Columns(q, heads * hd, rank * lh * hd, lh * hd), qq, $"rank {rank} q", 1e-5);
            Close(Columns(k, kv * hd, kvStart * hd, lkv * hd), kk, $"rank {rank} k", 1e-5);
            Close(Columns(v, kv * hd, kvStart * hd, lkv * hd), vv, $"rank {rank} v", 1e-5);
            if (fused)
            {
                var buffer = Tensor.Full(DType.Float32, float.NaN, 3 * layer.FusedWidth);
                var (bq, bk, bv) = layer.Forward(x, buffer);
                Assert.True(bq.BitwiseEquals(qq) && bk.BitwiseEquals(kk) && bv.BitwiseEquals(vv), "through the buffer");
            }
        }, TimeSpan.FromSeconds(30));
    }

    private static float[] Columns(float[] y, int width, int start, int count)
    {
        int m = y.Length / width;
        var o = new float[m * count];
        for (int i = 0; i < m; i++) Array.Copy(y, i * width + start, o, i * count, count);
        return o;
    }

    [Fact]
    public void Qkv_refuses_heads_and_kv_heads_that_do_not_split_and_a_projection_too_short()
    {
        var w = Qkv(6, 3, 4, 6, false, false);
        var heads = Assert.Throws<ArgumentException>(() => new QKVParallelLinear(w, "q", "k", "v", 6, 3, 4, new FakeGroup(0, 4)));
        Assert.Equal("q: 6 attention heads are not divisible by the tensor-parallel size 4", heads.Message);
        var kvSplit = Assert.Throws<ArgumentException>(() => new QKVParallelLinear(w, "q", "k", "v", 6, 3, 4, new FakeGroup(0, 2)));
        Assert.Equal("k: 3 kv heads cannot be split or replicated over tensor-parallel size 2", kvSplit.Message);
        var w2 = Qkv(8, 3, 4, 6, false, false);
        var kvRep = Assert.Throws<ArgumentException>(() => new QKVParallelLinear(w2, "q", "k", "v", 8, 3, 4, new FakeGroup(0, 4)));
        Assert.Equal("k: 3 kv heads cannot be split or replicated over tensor-parallel size 4", kvRep.Message);
        // k_proj holds 2 kv heads where the config says 4: rank 1 of 2 asks rows [8, 16) of [8, 6]
        var shortK = Qkv(4, 2, 4, 6, false, false);
        var rows = Assert.Throws<ArgumentException>(() => new QKVParallelLinear(shortK, "q", "k", "v", 4, 4, 4, new FakeGroup(1, 2)));
        Assert.Equal("k.weight [8, 6] has no rows [8, 16)", rows.Message);
        // exactly the rows there are: accepted
        _ = new QKVParallelLinear(shortK, "q", "k", "v", 4, 2, 4, new FakeGroup(1, 2));
        var shortQ = Assert.Throws<ArgumentException>(() => new QKVParallelLinear(Qkv(2, 2, 4, 6, false, false), "q", "k", "v", 4, 2, 4, new FakeGroup(1, 2)));
        Assert.Equal("q.weight [8, 6] has no rows [8, 16)", shortQ.Message);
    }

    /// <summary>A rank of a group whose collectives are never called (constructors only).</summary>
    private sealed class FakeGroup(int rank, int worldSize) : IProcessGroup
    {
        public int Rank => rank;
        public int WorldSize => worldSize;
        public string Name => "fake";
        public Tensor AllReduce(Tensor t) => throw new InvalidOperationException("no collectives here");
        public Tensor AllGather(Tensor t, int dim = 0) => throw new InvalidOperationException("no collectives here");
        public Tensor ReduceScatter(Tensor t, int dim = 0) => throw new InvalidOperationException("no collectives here");
        public Tensor Broadcast(Tensor t, int root) => throw new InvalidOperationException("no collectives here");
        public void Send(Tensor t, int dst) => throw new InvalidOperationException("no collectives here");
        public Tensor Recv(int src) => throw new InvalidOperationException("no collectives here");
        public void Barrier() { }
    }
}
