using Harness.Engine.Attention;
using Harness.Engine.Models;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The one attention (src/Engine/Attention/AttentionCore.cs) and its mask builder (AttentionMask.cs) against attention
/// written out by hand in float64: the checks the offline catalog cannot make (no catalog family uses an attention soft
/// cap, feeds k without v or a mask flag list of the wrong length, or masks a non-causal plane on the host), each a
/// Stryker.NET mutant that survived the catalog (notes/issue-21-mutants.md), written as the bug report it guards.
/// </summary>
public class AttentionMutationTests
{
    private const int Heads = 4, Kv = 2, Hd = 8;

    // cos = 1, sin = 0: RoPE is the identity, so the attention below is plain softmax(q.k * scaling) v per head
    private static (Tensor Cos, Tensor Sin) NoRotation(int t) =>
        (Tensor.Full(DType.Float32, 1.0, 1, t, Hd), Tensor.Zeros(DType.Float32, 1, t, Hd));

    // HF's eager_attention_forward in float64 for query rows at positions past .. past + t - 1 over keys 0 .. past + t - 1:
    // q [t, heads*hd], keys/values [s, kv*hd] -> [t, heads*hd]; head h reads kv head h / (heads / kv)
    private static double[] Expected(float[] q, float[] keys, float[] values, int t, int past, double scaling, double? cap, int? window)
    {
        int s = past + t, group = Heads / Kv;
        var o = new double[t * Heads * Hd];
        for (int i = 0; i < t; i++)
            for (int h = 0; h < Heads; h++)
            {
                int g = h / group, pos = past + i;
                var p = new double[s];
                for (int j = 0; j < s; j++)
                {
                    double dot = 0;
                    for (int d = 0; d < Hd; d++) dot += q[(i * Heads + h) * Hd + d] * (double)keys[(j * Kv + g) * Hd + d];
                    dot *= scaling;
                    if (cap is double c) dot = c * Math.Tanh(dot / c);
                    bool visible = j <= pos && !(window is int w && j <= pos - w);
                    p[j] = visible ? dot : double.NegativeInfinity;
                }
                double max = p.Max(), sum = p.Sum(x => Math.Exp(x - max));
                for (int j = 0; j < s; j++)
                {
                    double a = Math.Exp(p[j] - max) / sum;
                    for (int d = 0; d < Hd; d++) o[(i * Heads + h) * Hd + d] += a * values[(j * Kv + g) * Hd + d];
                }
            }
        return o;
    }

    // A prompt of 5 tokens then one decode token through one AttentionCore and one cache; each call's output against
    // Expected. Returns the largest absolute difference.
    private static double MaxError(AttentionSpec spec, double? cap, int? window)
    {
        var core = new AttentionCore(spec);
        var cache = new KvCache(Kv, Hd, 8, DType.Float32);
        var allK = new List<float>();
        var allV = new List<float>();
        double worst = 0;
        int past = 0;
        foreach (var (t, seed) in new[] { (5, 1UL), (1, 7UL) })
        {
            var q = Tensor.Normal(DType.Float32, seed, 0, 2, t, Heads * Hd);
            var k = Tensor.Normal(DType.Float32, seed + 1, 0, 2, t, Kv * Hd);
            var v = Tensor.Normal(DType.Float32, seed + 2, 0, 1, t, Kv * Hd);
            var (cos, sin) = NoRotation(t);
            var got = core.Forward(q, k, v, cos, sin, cache, t).ToFloatArray();
            allK.AddRange(k.ToFloatArray());
            allV.AddRange(v.ToFloatArray());
            var want = Expected(q.ToFloatArray(), [.. allK], [.. allV], t, past, spec.Scaling, cap, window);
            worst = Math.Max(worst, got.Zip(want, (a, b) => Math.Abs(a - b)).Max());
            past += t;
        }
        return worst;
    }

    [Fact]
    public void Plain_causal_attention_with_grouped_kv_heads_is_softmax_of_scaled_scores_times_values()
    {
        double scaling = Math.Pow(Hd, -0.5);
        Assert.True(MaxError(new AttentionSpec(Heads, Kv, Hd, scaling), null, null) < 1e-5, "fused host attention");
        using (ComputeSettings.UseBatchInvariant())
            Assert.True(MaxError(new AttentionSpec(Heads, Kv, Hd, scaling), null, null) < 1e-5, "eager attention");
    }

    [Fact]
    public void A_soft_cap_squashes_the_scaled_scores_with_cap_times_tanh_of_score_over_cap()
    {
        // mutants: the cap's division or multiplication swapped, the cap skipped (no catalog model sets one)
        var spec = new AttentionSpec(Heads, Kv, Hd, 0.5) { SoftCap = 1.5 };
        double err = MaxError(spec, 1.5, null);
        Assert.True(err < 1e-5, $"soft-capped attention is {err:E2} off cap * tanh(s / cap)");
        Assert.True(MaxError(spec with { SoftCap = null }, 1.5, null) > 1e-3, "the test's scores are not large enough to feel the cap");
    }

    [Fact]
    public void A_sliding_window_hides_keys_at_or_beyond_the_window_on_prefill_and_decode()
    {
        var spec = new AttentionSpec(Heads, Kv, Hd, 0.7) { Mask = AttentionMask.Sliding(3) };
        double err = MaxError(spec, null, 3);
        Assert.True(err < 1e-5, $"windowed attention is {err:E2} off the hand-written one");
    }

    [Fact]
    public void K_without_v_or_v_without_k_is_refused()
    {
        // mutants: the check removed (v = null then reaches the kernels) or its message emptied
        var core = new AttentionCore(new AttentionSpec(Heads, Kv, Hd, 1.0));
        var (cos, sin) = NoRotation(1);
        var q = Tensor.Zeros(DType.Float32, 1, Heads * Hd);
        var kv = Tensor.Zeros(DType.Float32, 1, Kv * Hd);
        foreach (var (k, v) in new[] { (kv, (Tensor?)null), (null, kv) })
        {
            var cache = new KvCache(Kv, Hd, 4, DType.Float32);
            var e = Assert.Throws<ArgumentException>(() => core.Forward(q, k, v, cos, sin, cache, 1));
            Assert.Equal("attention: k and v come together (both null: KV shared)", e.Message);
            Assert.Equal(0, cache.Length);
        }
    }

    [Fact]
    public void A_mask_without_causality_window_or_blocks_hides_nothing_on_the_host()
    {
        // mutant: the plain-causal fast path fills the tail after pos whether or not the mask is causal
        var scores = new float[2 * 3 * 3];
        AttentionMask.None.Apply(scores, 3, 3, 0);
        Assert.All(scores, x => Assert.Equal(0f, x));
        var t = Tensor.Zeros(DType.Float32, 2, 3, 3);
        AttentionMask.None.Apply(t, 3, 3, 0);
        Assert.All(t.ToFloatArray(), x => Assert.Equal(0f, x));
    }

    [Fact]
    public void The_plain_causal_mask_keeps_vision_blocks_causal_as_Llama_and_Qwen2_VL_do()
    {
        // mutant: the default rule (BlocksOnSlidingLayersOnly) flipped to Gemma 3's, under which CausalOnly would let an
        // image's first token see the image's later tokens; only Gemma widens the mask for blocks
        int[] blocks = [0, 0, 0];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                Assert.Equal(j <= i, AttentionMask.CausalOnly.Visible(i, j, 0, i, blocks));
        Assert.True(new AttentionSpec(1, 1, 2, 1.0).Mask.IsPlainCausal);
    }

    [Fact]
    public void Sdpa_with_key_padding_maps_each_query_head_to_its_kv_group_scales_and_skips_padded_keys()
    {
        // mutants: the kv group heads / kv written heads * kv, the scaling skipped (Gemma4's vision tower has one kv head
        // per query head and scaling 1.0, where both agree)
        const int b = 1, n = 3;
        var core = new AttentionCore(new AttentionSpec(Heads, Kv, Hd, 0.5));
        var q = Tensor.Normal(DType.Float32, 11, 0, 1, b, Heads, n, Hd);
        var k = Tensor.Normal(DType.Float32, 12, 0, 1, b, Kv, n, Hd);
        var v = Tensor.Normal(DType.Float32, 13, 0, 1, b, Kv, n, Hd);
        var padding = Tensor.FromArray(new[] { false, false, true }, b, 1, 1, n);            // key 2 is padding
        var got = core.SdpaKeyPadding(q, k, v, padding, Harness.Engine.Ops.MatmulOptions.Default).ToFloatArray();   // [1, heads, n, hd]
        float[] qa = q.ToFloatArray(), ka = k.ToFloatArray(), va = v.ToFloatArray();
        double worst = 0;
        for (int h = 0; h < Heads; h++)
            for (int i = 0; i < n; i++)
            {
                int g = h / (Heads / Kv);
                var s = new double[n];
                for (int j = 0; j < n; j++)
                {
                    for (int d = 0; d < Hd; d++) s[j] += qa[(h * n + i) * Hd + d] * (double)ka[(g * n + j) * Hd + d];
                    s[j] = j == 2 ? double.NegativeInfinity : s[j] * 0.5;
                }
                double max = s.Max(), sum = s.Sum(x => Math.Exp(x - max));
                for (int d = 0; d < Hd; d++)
                {
                    double o = 0;
                    for (int j = 0; j < n; j++) o += Math.Exp(s[j] - max) / sum * va[(g * n + j) * Hd + d];
                    worst = Math.Max(worst, Math.Abs(o - got[(h * n + i) * Hd + d]));
                }
            }
        Assert.True(worst < 1e-5, $"sdpa with key padding is {worst:E2} off the hand-written attention");
    }

    [Fact]
    public void Sequence_parallel_padding_rows_beyond_the_keys_leave_the_causal_mask_alone()
    {
        // SP pads the last rank's rows: 3 query rows over 2 real keys (row 2 is padding, its output dropped). Mutant: the
        // tail guard pos + 1 < s written pos - 1 < s slices row[s + 1..] for the padding row and throws.
        var scores = new float[3 * 2];
        AttentionMask.CausalOnly.Apply(scores, 3, 2, 0);
        Assert.Equal([0f, float.NegativeInfinity, 0f, 0f, 0f, 0f], scores);
    }

    [Fact]
    public void Masked_fill_sets_the_hidden_elements_of_every_plane_and_refuses_a_flag_list_of_the_wrong_length()
    {
        // [B=2, N=2 planes, per=3]: batch 0 hides element 1, batch 1 hides elements 0 and 2, in both planes
        var logits = Tensor.FromArray(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), 2, 2, 3);
        bool[] visible = [true, false, true, false, true, false];
        var y = AttentionMask.MaskedFill(logits, visible, 2, 2, -7f).ToFloatArray();
        Assert.Equal([0f, -7f, 2f, 3f, -7f, 5f, -7f, 7f, -7f, -7f, 10f, -7f], y);
        Assert.Equal(1f, logits.ToFloatArray()[1]);                                       // the input is left as it was
        var e = Assert.Throws<ArgumentException>(() => AttentionMask.MaskedFill(logits, [true, false], 2, 2, -7f));
        Assert.Equal("masked_fill: 2 flags for 2 x 3 elements", e.Message);
    }
}
