using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.Models.Llama;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Attention = Harness.Engine.Ops.Attention;

namespace Harness.Tests.Correctness.Ops;

/// <summary>
/// Issue 15's CPU glue: the fused host kernels compute what the ops they replace compute (the attention within float32
/// reordering and one bf16 ulp, the norm and the gated activation bit for bit, in both modes), and a Llama decode step
/// allocates nothing for the glue after warm-up.
/// </summary>
public class CpuGlueTests
{
    // HF's eager attention as ops: softmax((q @ K^T) * scale + mask, float32).to(dtype) @ V, per head, q [t, heads*hd]
    private static Tensor EagerReference(Tensor q, Tensor keys, Tensor values, int past, int filled, float scale)
    {
        int t = q.Shape[0], kv = keys.Shape[0], hd = keys.Shape[2], heads = q.Shape[1] / hd, group = heads / kv;
        var output = Tensor.Zeros(q.DType, t, heads * hd);
        for (int h = 0; h < heads; h++)
        {
            var qh = q.Narrow(1, h * hd, hd);                                               // [t, hd]
            var kh = keys.Select(0, h / group).Narrow(0, 0, filled);                        // [filled, hd]
            var scores = Elementwise.Mul(Matmul.Forward(qh, kh.T()), scale).To(DType.Float32);
            var s = scores.Span<float>();
            for (int i = 0; i < t; i++)
                for (int j = Math.Min(past + i + 1, filled); j < filled; j++) s[i * filled + j] = float.NegativeInfinity;
            var probs = Softmax.Forward(scores, -1).To(q.DType);
            output.Narrow(1, h * hd, hd).CopyFrom(Matmul.Forward(probs, values.Select(0, h / group).Narrow(0, 0, filled)));
        }
        return output;
    }

    [Theory]
    [InlineData(DType.Float32, 64, 5, 3, true, 8)]     // decode-sized: the row kernel (vector path, hd 64)
    [InlineData(DType.Float32, 24, 6, 0, true, 8)]     // hd 24: the scalar path
    [InlineData(DType.Float32, 64, 40, 7, true, 8)]    // prefill, hd a multiple of 16: the tiled kernel
    [InlineData(DType.Float32, 64, 37, 2, true, 6)]    // ... with 3 heads per kv head (tiles span tokens)
    [InlineData(DType.Float32, 24, 40, 3, true, 8)]    // prefill, hd 24: the blocked GEMM path
    [InlineData(DType.Float32, 48, 70, 5, true, 8)]    // hd 48: 16-lane scores, 8-lane values; 75 keys: 32-key blocks and a tail
    [InlineData(DType.Float32, 64, 40, 7, false, 8)]   // the row kernel on a prefill shape
    [InlineData(DType.BFloat16, 64, 5, 3, true, 8)]
    [InlineData(DType.BFloat16, 64, 40, 0, true, 8)]
    [InlineData(DType.BFloat16, 24, 40, 0, true, 8)]
    public void Fused_attention_equals_the_eager_ops(DType dt, int hd, int t, int past, bool blocked, int heads)
    {
        int kv = 2, cap = past + t + 4;
        var q = Tensor.Randn(DType.Float32, 1, t, heads * hd).To(dt);
        var keys = Tensor.Randn(DType.Float32, 2, kv, cap, hd).To(dt);
        var values = Tensor.Randn(DType.Float32, 3, kv, cap, hd).To(dt);
        float scale = 1f / MathF.Sqrt(hd);
        int filled = past + t - 1;                                                        // one SP padding query at the end
        var got = Tensor.Zeros(dt, t, heads * hd);
        Attention.CausalInto(q, keys, values, past, filled, scale, got, prefillKernel: blocked);
        var want = EagerReference(q, keys, values, past, filled, scale);
        var g = got.ToFloatArray();
        var w = want.ToFloatArray();
        for (int i = 0; i < g.Length; i++)
        {
            double tol = dt == DType.Float32 ? 1e-5 + 1e-5 * Math.Abs(w[i]) : 0.02 + 0.02 * Math.Abs(w[i]); // bf16: probs rounded on both sides
            Assert.True(Math.Abs(g[i] - w[i]) <= tol, $"output[{i / (heads * hd)}, {i % (heads * hd)}]: fused {g[i]:R}, eager {w[i]:R}");
        }
    }

    [Theory]
    [InlineData(DType.Float32, false)]
    [InlineData(DType.Float32, true)]
    [InlineData(DType.BFloat16, false)]
    [InlineData(DType.BFloat16, true)]
    public void Fused_add_rms_norm_is_bitwise_add_then_llama_rms_norm(DType dt, bool invariant)
    {
        using var mode = ComputeSettings.UseBatchInvariant(invariant);
        var x = Tensor.Randn(DType.Float32, 4, 7, 96).To(dt);
        var residual = Tensor.Randn(DType.Float32, 5, 7, 96).To(dt);
        var weight = Tensor.Randn(DType.Float32, 6, 96).To(dt);
        var sum = Elementwise.Add(x, residual);
        var want = Norms.RmsNorm(sum, weight, 1e-5, RmsNormKind.Llama);
        var normed = Tensor.Zeros(dt, 7, 96);
        var inPlace = residual.Clone();
        Norms.AddRmsNormInto(x, inPlace, weight, 1e-5, inPlace, normed);                // in place on the residual
        Assert.True(sum.BitwiseEquals(inPlace), "residual + x");
        Assert.True(want.BitwiseEquals(normed), "normed");
        var plain = Tensor.Zeros(dt, 7, 96);
        Norms.AddRmsNormInto(null, sum, weight, 1e-5, null, plain);
        Assert.True(want.BitwiseEquals(plain), "plain norm");
    }

    [Theory]
    [InlineData(DType.Float32, ActivationKind.Silu)]
    [InlineData(DType.BFloat16, ActivationKind.Silu)]
    [InlineData(DType.Float32, ActivationKind.GeluTanh)]
    [InlineData(DType.BFloat16, ActivationKind.GeluNew)]
    public void One_pass_gated_activation_is_bitwise_act_then_mul(DType dt, ActivationKind kind)
    {
        var gateUp = Tensor.Randn(DType.Float32, 8, 5, 2 * 77).To(dt);                  // [tokens, 2d]: halves as views
        var gate = gateUp.Narrow(-1, 0, 77);
        var up = gateUp.Narrow(-1, 77, 77);
        var want = Elementwise.Mul(Activation.Apply(gate, kind), up);
        var got = Tensor.Zeros(dt, 5, 77);
        Activation.ApplyGatedInto(gate, up, kind, got);
        Assert.True(want.BitwiseEquals(got), $"{kind} {dt}");
        Assert.True(want.BitwiseEquals(Activation.ApplyGated(gateUp, kind)), "ApplyGated");
    }

    [Fact]
    public void Vectorized_bf16_conversions_equal_the_scalar_rule_on_every_kind_of_float()
    {
        var rng = new SplitMix64(7);
        var x = new float[4099];                                                        // not a multiple of 16: the tail too
        for (int i = 0; i < x.Length; i++) x[i] = BitConverter.UInt32BitsToSingle((uint)rng.Next());
        float[] special = [float.NaN, -float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, float.Epsilon,
            float.MaxValue, -float.MaxValue, BitConverter.UInt32BitsToSingle(0x3F808000), BitConverter.UInt32BitsToSingle(0x3F818000),
            BitConverter.UInt32BitsToSingle(0x7F7FFFFF), BitConverter.UInt32BitsToSingle(0xFF7F8000), BitConverter.UInt32BitsToSingle(0x00008000)];
        special.CopyTo(x, 100);
        var bits = new ushort[x.Length];
        BFloat16.FromFloat(x, bits);
        var rounded = (float[])x.Clone();
        BFloat16.RoundInPlace(rounded);
        var back = new float[x.Length];
        BFloat16.ToFloat(bits, back);
        for (int i = 0; i < x.Length; i++)
        {
            Assert.Equal(BFloat16.FromFloat(x[i]), bits[i]);
            Assert.Equal(BitConverter.SingleToUInt32Bits(BFloat16.Round(x[i])), BitConverter.SingleToUInt32Bits(rounded[i]));
            Assert.Equal(BitConverter.SingleToUInt32Bits(BFloat16.ToFloat(bits[i])), BitConverter.SingleToUInt32Bits(back[i]));
        }
    }

    private static (LlamaForCausalLM Model, long LinearOutputBytes) RandomLlama(DType dt, int width = 1)
    {
        string json = $$"""
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": {{128 * width}}, "intermediate_size": {{320 * width}},
             "num_hidden_layers": 2, "num_attention_heads": {{4 * width}}, "num_key_value_heads": {{2 * width}}, "head_dim": 32, "vocab_size": {{96 * width}},
             "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "hidden_act": "silu", "rope_theta": 10000.0}
            """;
        var config = HfConfig.Parse(json, "glue/config.json").Text;
        var weights = new Dictionary<string, Tensor>();
        ulong seed = 10;
        foreach (var e in LlamaTensors.Expected(config).Tensors.Where(e => !e.Optional))
            weights[e.Name] = Tensor.Normal(DType.Float32, seed++, 0f, 0.1f, e.Shape).To(dt);
        var model = new LlamaForCausalLM(new DictionaryWeights(weights), config, ParallelContext.Single, maxPositions: 64);
        // one token: q, k, v (fused), o_proj, gate_up, down_proj per layer, and the logits
        long perLayer = (4 * 32 + 2 * 2 * 32) + 128 + 2 * 320 + 128;
        return (model, (2 * perLayer + 96) * dt.Size());
    }

    // A decode step on one rank writes every linear layer's output into the model's workspace and the logits into the
    // caller's buffer: what it still allocates is a fixed count of small objects (views), not tensor storage. Proof: a
    // model four times as wide (hidden, heads, intermediate, vocab) allocates no more per step than the narrow one.
    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void A_decode_step_allocates_no_tensor_storage_after_warm_up(DType dt)
    {
        // one thread: no GEMM pool hand-off, whose Parallel.For fallback (when another test holds the pool) allocates
        using var oneThread = Harness.Engine.Runtime.ComputeSettings.UseThreads(1);
        long Step(int width)
        {
            var (model, _) = RandomLlama(dt, width);
            var logits = Tensor.Zeros(dt, 1, 96 * width);
            model.Forward(Tensor.FromArray(new long[] { 3, 17, 5, 60, 2, 9 }, 6), 6);
            var input = Tensor.FromArray(new long[] { 11 }, 1);
            for (int s = 0; s < 3; s++) model.Forward(input, 1, logits);              // warm-up: buffers sized for one token
            long before = GC.GetAllocatedBytesForCurrentThread();
            model.Forward(input, 1, logits);
            long step = GC.GetAllocatedBytesForCurrentThread() - before;
            return step;
        }
        long narrow = Step(1), wide = Step(4);
        Assert.True(wide <= narrow + 512, $"a decode step allocated {narrow} bytes at width x1 and {wide} at x4: something scales with the tensors");
    }

    [Fact]
    public void Linear_layers_write_into_a_given_buffer_with_the_bits_of_a_fresh_output()
    {
        foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
            foreach (var bias in new[] { false, true })
                foreach (var m in new[] { 1, 5, 64 })
                {
                    var w = Tensor.Normal(DType.Float32, 3, 0f, 0.1f, 80, 48).To(dt);
                    var b = bias ? Tensor.Normal(DType.Float32, 4, 0f, 0.1f, 80).To(dt) : null;
                    var x = Tensor.Normal(DType.Float32, 5, 0f, 1f, m, 48).To(dt);
                    var linear = new Harness.Engine.Layers.Linear(w, b);
                    var fresh = linear.Forward(x);
                    var buffer = Tensor.Normal(DType.Float32, 6, 0f, 9f, m, 80).To(dt);       // dirty: every element is overwritten
                    var given = linear.Forward(x, buffer);
                    Assert.Equal(fresh.ToDoubleArray(), given.ToDoubleArray());
                    Assert.Equal(fresh.ToDoubleArray(), buffer.ToDoubleArray());
                }
        var l = new Harness.Engine.Layers.Linear(Tensor.Zeros(DType.Float32, 8, 4));
        var e = Assert.Throws<ArgumentException>(() => l.Forward(Tensor.Zeros(DType.Float32, 2, 4), Tensor.Zeros(DType.Float32, 2, 7)));
        Assert.Contains("cannot hold [2, 8]", e.Message);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void In_batch_invariant_mode_decode_logits_are_bitwise_those_of_the_longer_prefill(DType dt)
    {
        using var mode = ComputeSettings.UseBatchInvariant();
        var (model, _) = RandomLlama(dt);
        var ids = new long[] { 3, 17, 5, 60, 2, 9, 41 };
        var full = model.Forward(Tensor.FromArray(ids, 7), 7)!.Narrow(0, 6, 1).Contiguous();
        model.Reset();
        model.Forward(Tensor.FromArray(ids[..6], 6), 6);
        var step = model.Forward(Tensor.FromArray(ids[6..], 1), 1)!;
        Assert.True(full.BitwiseEquals(step), "the last position's logits differ between a 7-token prefill and 6 + 1 decode");
    }

    // Generation's prefill needs the last token's logits only (HF's logits_to_keep): lm_head runs on those rows, and
    // they are the full forward's rows bit for bit (a packed product's bits do not depend on M).
    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Logits_to_keep_runs_lm_head_on_the_last_rows_with_the_full_forwards_bits(DType dt)
    {
        var (model, _) = RandomLlama(dt);
        var ids = Tensor.FromArray(new long[] { 3, 17, 5, 60, 2, 9, 41 }, 7);
        var full = model.Forward(ids, 7)!;
        model.Reset();
        var kept = model.Forward(ids, 7, logitsToKeep: 2)!;
        Assert.Equal([2, 96], kept.Shape.ToArray());
        Assert.True(full.Narrow(0, 5, 2).Contiguous().BitwiseEquals(kept), "logits_to_keep=2 differs from the full forward's last two rows");
        model.Reset();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(ids, 7, logitsToKeep: 8));
        Assert.Contains("logits_to_keep 8 must be 0 (all) or 1..7", e.Message);
    }

    [Fact]
    public void Decode_after_prefill_matches_one_longer_prefill()
    {
        var (model, _) = RandomLlama(DType.Float32);
        var ids = new long[] { 3, 17, 5, 60, 2, 9, 41 };
        var full = model.Forward(Tensor.FromArray(ids, 7), 7)!.Select(0, 6).ToFloatArray();
        model.Reset();
        model.Forward(Tensor.FromArray(ids[..6], 6), 6);
        var step = model.Forward(Tensor.FromArray(ids[6..], 1), 1)!.Select(0, 0).ToFloatArray();
        for (int i = 0; i < full.Length; i++) Assert.True(Math.Abs(full[i] - step[i]) <= 1e-4 + 1e-4 * Math.Abs(full[i]), $"logit {i}: {full[i]} vs {step[i]}");
    }
}
