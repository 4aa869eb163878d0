using Harness.Engine.Attention;
using Harness.Engine.Models;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Ops;

/// <summary>
/// The one attention (<see cref="AttentionCore"/>) and its one mask builder (<see cref="AttentionMask"/>): the mask says
/// exactly which keys each query sees under every rule a family uses (causal, sliding, both of Gemma4's vision-block rules),
/// and the backends it chooses between (the fused host kernel, the eager torch ops) compute the same attention, for a
/// fresh cache, a cache with a past, GQA and a KV-shared layer that reads its source's cache.
/// </summary>
public class AttentionCoreTests
{
    // Visible[i][j] as a string per query row ("1" = visible), from the mask builder.
    private static string[] Grid(AttentionMask mask, int t, int s, int past, int[]? blocks) =>
        [.. Enumerable.Range(0, t).Select(i => string.Concat(Enumerable.Range(0, s).Select(j => mask.Visible(past + i, j, past, i, blocks) ? '1' : '0')))];

    [Fact]
    public void The_mask_builder_follows_each_rule_key_by_key()
    {
        int[] blocks = [-1, 0, 0, 0, -1, 1];                       // text, a 3-token image, text, a 1-token image
        // causal (Llama, Qwen2-VL, full layers without blocks)
        Assert.Equal(["100000", "110000", "111000", "111100", "111110", "111111"], Grid(AttentionMask.CausalOnly, 6, 6, 0, null));
        // sliding window 2: j > i - 2
        Assert.Equal(["100000", "110000", "011000", "001100", "000110", "000011"], Grid(AttentionMask.Sliding(2), 6, 6, 0, null));
        // Gemma 4's rule, sliding layer: window AND (causal OR same block): the image's tokens see the later ones of their block,
        // but the window still hides earlier keys (the image's last token does not see its first)
        Assert.Equal(["100000", "111100", "011100", "001100", "000110", "000011"], Grid(AttentionMask.Sliding(2, true), 6, 6, 0, blocks));
        // Gemma 4's rule, full layer: causal only, blocks ignored
        Assert.Equal(["100000", "110000", "111000", "111100", "111110", "111111"], Grid(AttentionMask.Sliding(null, true), 6, 6, 0, blocks));
        // Gemma 3's rule (every layer): (causal AND window) OR same block, the whole image both ways
        Assert.Equal(["100000", "111100", "011100", "011100", "000110", "000011"], Grid(AttentionMask.Sliding(2, false), 6, 6, 0, blocks));
        Assert.Equal(["100000", "111100", "111100", "111100", "111110", "111111"], Grid(AttentionMask.Sliding(null, false), 6, 6, 0, blocks));
        // with a past of 3 keys: query i sits at 3 + i, blocks index the new rows only
        Assert.Equal(["11110", "11111"], Grid(AttentionMask.CausalOnly, 2, 5, 3, null));
        Assert.Equal(["00011", "00011"], Grid(AttentionMask.Sliding(1, false), 2, 5, 3, [0, 0]));
    }

    [Fact]
    public void The_host_mask_writes_minus_infinity_exactly_where_a_key_is_hidden()
    {
        int[] blocks = [-1, 0, 0, 0, -1, 1];
        foreach (var mask in new[] { AttentionMask.CausalOnly, AttentionMask.Sliding(2), AttentionMask.Sliding(2, false), AttentionMask.Sliding(null, false) })
        {
            var scores = new float[2 * 6 * 6];                       // two planes
            mask.Apply(scores, 6, 6, 0, blocks);
            for (int p = 0; p < 2; p++)
                for (int i = 0; i < 6; i++)
                    for (int j = 0; j < 6; j++)
                        Assert.Equal(mask.Visible(i, j, 0, i, blocks),
                            !float.IsNegativeInfinity(scores[(p * 6 + i) * 6 + j]));
        }
    }

    // A decoder layer's attention over two calls (a prompt of 9 then one token), [t, heads*hd] each.
    private static (Tensor Prefill, Tensor Decode) TwoCalls(AttentionCore core, DType dtype, bool shared)
    {
        const int heads = 4, kv = 2, hd = 16;
        var cache = new KvCache(kv, hd, 16, dtype);
        var sourceCache = new KvCache(kv, hd, 16, dtype);
        Tensor Run(int t, int seed, int start)
        {
            var q = Tensor.Normal(dtype, (ulong)seed, 0, 1, t, heads * hd);
            var k = Tensor.Normal(dtype, (ulong)seed + 1, 0, 1, t, kv * hd);
            var v = Tensor.Normal(dtype, (ulong)seed + 2, 0, 1, t, kv * hd);
            var pos = Tensor.Arange(t);
            for (int i = 0; i < t; i++) pos.Set(start + i, i);
            var (cos, sin) = Harness.Engine.Ops.Rotary.CosSin(Harness.Engine.Ops.Rotary.InvFreq(10000, hd), pos.Unsqueeze(0), dtype);
            if (!shared) return core.Forward(q, k, v, cos, sin, cache, t).Clone();
            // a KV-shared layer: the source layer appends this step's keys, the shared one reads them
            new AttentionCore(core.Spec).Forward(q, k, v, cos, sin, sourceCache, t);
            return core.Forward(q, null, null, cos, sin, sourceCache, t).Clone();
        }
        return (Run(9, 10, 0), Run(1, 20, 9));
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void The_fused_host_backend_and_the_eager_ops_compute_the_same_attention(bool bf16, bool kvShared)
    {
        var dtype = bf16 ? DType.BFloat16 : DType.Float32;
        string dtypeName = dtype.TorchName();
        var core = new AttentionCore(new AttentionSpec(4, 2, 16, Math.Pow(16, -0.5)));
        var probe = Tensor.Zeros(dtype, 1, 64);
        Assert.Equal(AttentionCore.Kind.FusedHost, core.Backend(probe, probe, Tensor.Zeros(dtype, 1, 1, 16), new KvCache(2, 16, 4, dtype), 1, null));
        var fused = TwoCalls(core, dtype, kvShared);
        (Tensor Prefill, Tensor Decode) eager;
        using (ComputeSettings.UseBatchInvariant())                  // the fused kernel is normal mode only: the eager ops run
        {
            Assert.Equal(AttentionCore.Kind.Eager, core.Backend(probe, probe, Tensor.Zeros(dtype, 1, 1, 16), new KvCache(2, 16, 4, dtype), 1, null));
            eager = TwoCalls(core, dtype, kvShared);
        }
        double tol = dtype == DType.Float32 ? 1e-5 : 2e-2;
        foreach (var (a, b, what) in new[] { (fused.Prefill, eager.Prefill, "prefill"), (fused.Decode, eager.Decode, "decode") })
        {
            var x = a.To(DType.Float32).ToFloatArray();
            var y = b.To(DType.Float32).ToFloatArray();
            double max = x.Zip(y, (p, r) => Math.Abs(p - r)).Max();
            Assert.True(max < tol, $"{dtypeName} {what} (kv shared: {kvShared}): the fused and eager attentions differ by {max}");
        }
    }

    [Fact]
    public void A_window_blocks_or_a_soft_cap_take_the_eager_path_on_the_host()
    {
        var probe = Tensor.Zeros(DType.Float32, 1, 64);
        var cos = Tensor.Zeros(DType.Float32, 1, 1, 16);
        var cache = new KvCache(2, 16, 4, DType.Float32);
        Assert.Equal(AttentionCore.Kind.Eager, new AttentionCore(new AttentionSpec(4, 2, 16, 1.0) { Mask = AttentionMask.Sliding(3) }).Backend(probe, probe, cos, cache, 1, null));
        Assert.Equal(AttentionCore.Kind.Eager, new AttentionCore(new AttentionSpec(4, 2, 16, 1.0) { SoftCap = 50 }).Backend(probe, probe, cos, cache, 1, null));
        Assert.Equal(AttentionCore.Kind.Eager, new AttentionCore(new AttentionSpec(4, 2, 16, 1.0)).Backend(probe, probe, cos, cache, 1, [0]));
    }
}
