using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The host's fused attention pieces (<see cref="Attention.RopeIntoCache"/>, <see cref="Attention.CausalInto"/>) where the
/// models never take them: every refusal (a model always passes well-formed views, so no catalog scenario reaches a
/// message), a prompt with SP padding rows (real &lt; t) written after earlier cache rows, cos/sin of rank 3, q/k/v as
/// column views of one fused qkv output, and both the serial and the parallel token loops. Written for the Stryker.NET
/// mutants of src/Engine/Ops/Attention.cs (notes/issue-21-mutops.md).
/// </summary>
public class OpsAttentionMutationTests
{
    private sealed record Rope(Tensor Q, Tensor K, Tensor V, Tensor Cos, Tensor Sin, Tensor QOut, Tensor CacheK, Tensor CacheV);

    // q [t, heads*hd], k and v [t, kv*hd] as column views of one fused [t, (heads + 2kv)*hd] output; cos/sin [1, t, hd]
    private static Rope Make(DType dt, int t, int heads, int kv, int hd, int cap, int seed = 1)
    {
        var qkv = Tensor.Randn(DType.Float32, (ulong)seed, t, (heads + 2 * kv) * hd).To(dt);
        var inv = Rotary.InvFreq(10000.0, hd);
        var (cos, sin) = Rotary.CosSin(inv, Tensor.FromArray(Enumerable.Range(3, t).Select(i => (long)i).ToArray(), t), dt);
        var cacheK = Tensor.Randn(DType.Float32, (ulong)seed + 7, kv, cap, hd).To(dt);
        var cacheV = Tensor.Randn(DType.Float32, (ulong)seed + 8, kv, cap, hd).To(dt);
        return new Rope(qkv.Narrow(1, 0, heads * hd), qkv.Narrow(1, heads * hd, kv * hd), qkv.Narrow(1, (heads + kv) * hd, kv * hd),
            cos, sin, Tensor.Zeros(dt, t, heads * hd), cacheK, cacheV);
    }

    // x [t, n*hd] -> apply_rotary_pos_emb per head -> [t, n*hd]
    private static Tensor RefRope(Tensor x, int n, int hd, Tensor cos, Tensor sin)
    {
        int t = x.Shape[0];
        var heads = x.Contiguous().View(1, t, n, hd).Transpose(1, 2).Contiguous();             // [1, n, t, hd]
        var y = Rotary.Apply(heads, cos, sin);                                                    // cos [1, t, hd]
        return y.Transpose(1, 2).Contiguous().View(t, n * hd);
    }

    [Theory]
    [InlineData(DType.Float32, 1)]
    [InlineData(DType.BFloat16, 1)]
    [InlineData(DType.Float32, 4)]
    [InlineData(DType.BFloat16, 4)]
    public void Rope_into_cache_rotates_q_and_the_real_k_rows_into_the_cache_after_past_and_copies_v(DType dt, int threads)
    {
        // t = 40 tokens, 5 of them SP padding (real 35), 3 rows already cached; at 4 threads the token loop runs in parallel
        int t = 40, heads = 4, kv = 2, hd = 128, past = 3, real = 35, cap = past + t + 2;   // 40 * 8 * 128 elements: past the parallel bound
        var r = Make(dt, t, heads, kv, hd, cap);
        var keysBefore = r.CacheK.Clone();
        var valuesBefore = r.CacheV.Clone();
        using (ComputeSettings.UseThreads(threads))
            Attention.RopeIntoCache(r.Q, r.K, r.V, r.Cos, r.Sin, r.QOut, r.CacheK, r.CacheV, past, real);
        Assert.True(r.QOut.BitwiseEquals(RefRope(r.Q, heads, hd, r.Cos, r.Sin)), "q rotated, every token (padding included)");
        var kRot = RefRope(r.K, kv, hd, r.Cos, r.Sin);
        for (int g = 0; g < kv; g++)
            for (int row = 0; row < cap; row++)
            {
                int i = row - past;
                var wantK = i >= 0 && i < real ? kRot.Narrow(0, i, 1).Narrow(1, g * hd, hd) : keysBefore.Select(0, g).Narrow(0, row, 1);
                var wantV = i >= 0 && i < real ? r.V.Narrow(0, i, 1).Narrow(1, g * hd, hd) : valuesBefore.Select(0, g).Narrow(0, row, 1);
                Assert.True(r.CacheK.Select(0, g).Narrow(0, row, 1).Contiguous().View(hd).BitwiseEquals(wantK.Contiguous().View(hd)), $"cache k[{g}, {row}]");
                Assert.True(r.CacheV.Select(0, g).Narrow(0, row, 1).Contiguous().View(hd).BitwiseEquals(wantV.Contiguous().View(hd)), $"cache v[{g}, {row}]");
            }
    }

    [Fact]
    public void The_fused_path_is_for_host_float32_and_bfloat16_outside_batch_invariant_mode_only()
    {
        Assert.True(Attention.Supports(Tensor.Zeros(DType.Float32, 2, 8)));
        Assert.True(Attention.Supports(Tensor.Zeros(DType.BFloat16, 2, 8)));
        Assert.False(Attention.Supports(Tensor.Zeros(DType.Float16, 2, 8)));
        using (ComputeSettings.UseBatchInvariant())
            Assert.False(Attention.Supports(Tensor.Zeros(DType.Float32, 2, 8)));
    }

    [Fact]
    public void Rope_into_cache_takes_cos_and_sin_of_rank_2_as_of_rank_3()
    {
        var a = Make(DType.Float32, 3, 2, 1, 8, 5);
        var b = Make(DType.Float32, 3, 2, 1, 8, 5);
        Attention.RopeIntoCache(a.Q, a.K, a.V, a.Cos, a.Sin, a.QOut, a.CacheK, a.CacheV, 1, 3);
        Attention.RopeIntoCache(b.Q, b.K, b.V, b.Cos.Select(0, 0), b.Sin.Select(0, 0), b.QOut, b.CacheK, b.CacheV, 1, 3);
        Assert.True(a.QOut.BitwiseEquals(b.QOut));
        Assert.True(a.CacheK.BitwiseEquals(b.CacheK));
    }

    public static TheoryData<string, string> RopeRefusals() => new()
    {
        { "k dtype", "rope_into_cache: k is bfloat16, q is float32" },
        { "v dtype", "rope_into_cache: v is bfloat16, q is float32" },
        { "cos dtype", "rope_into_cache: cos is bfloat16, q is float32" },
        { "sin dtype", "rope_into_cache: sin is bfloat16, q is float32" },
        { "q_out dtype", "rope_into_cache: q_out is bfloat16, q is float32" },
        { "cache k dtype", "rope_into_cache: cache k is bfloat16, q is float32" },
        { "cache v dtype", "rope_into_cache: cache v is bfloat16, q is float32" },
        { "q rank", "rope_into_cache: q [3, 16, 1], k [3, 8], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "k rank", "rope_into_cache: q [3, 16], k [3, 8, 1], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "v rank", "rope_into_cache: q [3, 16], k [3, 8], v [3, 8, 1] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "q width", "rope_into_cache: q [3, 20], k [3, 8], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "k width", "rope_into_cache: q [3, 16], k [3, 16], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "v width", "rope_into_cache: q [3, 16], k [3, 8], v [3, 16] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "k rows", "rope_into_cache: q [3, 16], k [2, 8], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "v rows", "rope_into_cache: q [3, 16], k [3, 8], v [2, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "q stride", "rope_into_cache: q [3, 16], k [3, 8], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "k stride", "rope_into_cache: q [3, 16], k [3, 8], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "v stride", "rope_into_cache: q [3, 16], k [3, 8], v [3, 8] must be [t, heads*8], [t, 1*8] with contiguous rows" },
        { "cos rank", "rope_into_cache: cos/sin [24] must be [3, 8] contiguous" },
        { "cos rows", "rope_into_cache: cos/sin [4, 8] must be [3, 8] contiguous" },
        { "cos width", "rope_into_cache: cos/sin [3, 16] must be [3, 8] contiguous" },
        { "cos strided", "rope_into_cache: cos/sin [3, 8] must be [3, 8] contiguous" },
        { "sin shape", "rope_into_cache: cos/sin [3, 8] must be [3, 8] contiguous" },
        { "sin strided", "rope_into_cache: cos/sin [3, 8] must be [3, 8] contiguous" },
        { "q_out strided", "rope_into_cache: q_out [3, 16] must be [3, 16] contiguous" },
        { "q_out shape", "rope_into_cache: q_out [3, 24] must be [3, 16] contiguous" },
        { "cache k strided", "rope_into_cache: cache [1, 5, 8] cannot take 3 rows after 1" },
        { "cache v strided", "rope_into_cache: cache [1, 5, 8] cannot take 3 rows after 1" },
        { "cache shapes", "rope_into_cache: cache [1, 5, 8] cannot take 3 rows after 1" },
        { "past < 0", "rope_into_cache: cache [1, 5, 8] cannot take 3 rows after -1" },
        { "real > t", "rope_into_cache: cache [1, 5, 8] cannot take 4 rows after 1" },
        { "past + real > capacity", "rope_into_cache: cache [1, 5, 8] cannot take 3 rows after 3" },
    };

    [Theory]
    [MemberData(nameof(RopeRefusals))]
    public void Rope_into_cache_refuses_each_argument_that_is_not_what_it_reads_naming_it(string what, string message)
    {
        // the valid call: t = 3, heads 2, kv 1, hd 8, cache [1, 5, 8], past 1, real 3
        var r = Make(DType.Float32, 3, 2, 1, 8, 5);
        Tensor q = r.Q, k = r.K, v = r.V, cos = r.Cos, sin = r.Sin, qOut = r.QOut, ck = r.CacheK, cv = r.CacheV;
        int past = 1, real = 3;
        Tensor Bf(Tensor x) => x.To(DType.BFloat16);
        Tensor Strided(Tensor x) => Tensor.Zeros(x.DType, x.Shape[0], 2 * x.Shape[1]).Narrow(1, 0, x.Shape[1]);   // rows not contiguous
        Tensor ColStride(Tensor x) => Tensor.Zeros(x.DType, x.Shape[1], x.Shape[0]).T();                          // last stride != 1
        switch (what)
        {
            case "k dtype": k = Bf(k); break;
            case "v dtype": v = Bf(v); break;
            case "cos dtype": cos = Bf(cos); break;
            case "sin dtype": sin = Bf(sin); break;
            case "q_out dtype": qOut = Bf(qOut); break;
            case "cache k dtype": ck = Bf(ck); break;
            case "cache v dtype": cv = Bf(cv); break;
            case "q rank": q = q.Contiguous().View(3, 16, 1); break;
            case "k rank": k = k.Contiguous().View(3, 8, 1); break;
            case "v rank": v = v.Contiguous().View(3, 8, 1); break;
            case "q width": q = Tensor.Zeros(DType.Float32, 3, 20); break;
            case "k width": k = Tensor.Zeros(DType.Float32, 3, 16); break;
            case "v width": v = Tensor.Zeros(DType.Float32, 3, 16); break;
            case "k rows": k = Tensor.Zeros(DType.Float32, 2, 8); break;
            case "v rows": v = Tensor.Zeros(DType.Float32, 2, 8); break;
            case "q stride": q = ColStride(q); break;
            case "k stride": k = ColStride(k); break;
            case "v stride": v = ColStride(v); break;
            case "cos rank": cos = sin = Tensor.Zeros(DType.Float32, 24); break;
            case "cos rows": cos = sin = Tensor.Zeros(DType.Float32, 4, 8); break;
            case "cos width": cos = sin = Tensor.Zeros(DType.Float32, 3, 16); break;
            case "cos strided": cos = Strided(cos.Select(0, 0)); sin = sin.Select(0, 0); break;
            case "sin shape": sin = Tensor.Zeros(DType.Float32, 3, 4); cos = cos.Select(0, 0); message = "rope_into_cache: cos/sin [3, 8] must be [3, 8] contiguous"; break;
            case "sin strided": cos = cos.Select(0, 0); sin = Strided(sin.Select(0, 0)); break;
            case "q_out strided": qOut = Strided(qOut); break;
            case "q_out shape": qOut = Tensor.Zeros(DType.Float32, 3, 24); break;
            case "cache k strided": ck = Tensor.Zeros(DType.Float32, 2, 5, 8).Narrow(0, 0, 1).Transpose(1, 2).Contiguous().Transpose(1, 2); break;
            case "cache v strided": cv = Tensor.Zeros(DType.Float32, 2, 5, 8).Narrow(0, 0, 1).Transpose(1, 2).Contiguous().Transpose(1, 2); break;
            case "cache shapes": cv = Tensor.Zeros(DType.Float32, 1, 6, 8); break;
            case "past < 0": past = -1; break;
            case "real > t": real = 4; break;
            case "past + real > capacity": past = 3; break;
        }
        var ex = Assert.Throws<ArgumentException>(() => Attention.RopeIntoCache(q, k, v, cos, sin, qOut, ck, cv, past, real));
        Assert.Equal(message, ex.Message);
    }

    [Fact]
    public void Rope_into_cache_refuses_an_odd_head_dim_and_fills_exactly_the_cache()
    {
        var r = Make(DType.Float32, 3, 2, 1, 8, 5);
        var odd = Assert.Throws<ArgumentException>(() => Attention.RopeIntoCache(Tensor.Zeros(DType.Float32, 3, 14), Tensor.Zeros(DType.Float32, 3, 7),
            Tensor.Zeros(DType.Float32, 3, 7), Tensor.Zeros(DType.Float32, 3, 7), Tensor.Zeros(DType.Float32, 3, 7), Tensor.Zeros(DType.Float32, 3, 14),
            Tensor.Zeros(DType.Float32, 1, 4, 7), Tensor.Zeros(DType.Float32, 1, 4, 7), 0, 3));
        Assert.Equal("rope_into_cache: head dim must be even, got 7", odd.Message);
        // past + real == capacity and real == t are allowed
        Attention.RopeIntoCache(r.Q, r.K, r.V, r.Cos, r.Sin, r.QOut, r.CacheK, r.CacheV, 2, 3);
        Attention.RopeIntoCache(r.Q, r.K, r.V, r.Cos, r.Sin, r.QOut, r.CacheK, r.CacheV, 0, 0);
    }

    public static TheoryData<string, string> CausalRefusals() => new()
    {
        { "keys dtype", "attention: q, keys, values and output must share float32 or bfloat16, got float32, bfloat16, float32, float32" },
        { "values dtype", "attention: q, keys, values and output must share float32 or bfloat16, got float32, float32, bfloat16, float32" },
        { "output dtype", "attention: q, keys, values and output must share float32 or bfloat16, got float32, float32, float32, bfloat16" },
        { "float16", "attention: q, keys, values and output must share float32 or bfloat16, got float16, float16, float16, float16" },
        { "q rank", "attention: q [3, 32, 1] must be [t, heads*8] contiguous with heads a multiple of 2" },
        { "q strided", "attention: q [3, 32] must be [t, heads*8] contiguous with heads a multiple of 2" },
        { "q width", "attention: q [3, 36] must be [t, heads*8] contiguous with heads a multiple of 2" },
        { "heads not a multiple", "attention: q [3, 24] must be [t, heads*8] contiguous with heads a multiple of 2" },
        { "no heads", "attention: q [3, 0] must be [t, heads*8] contiguous with heads a multiple of 2" },
        { "keys rank", "attention: keys [2, 6, 8, 1] and values [2, 6, 8, 1] must be one contiguous [kv, capacity >= 4, 8] cache with 4 > 1 rows filled" },
        { "keys strided", "attention: keys [2, 6, 8] and values [2, 6, 8] must be one contiguous [kv, capacity >= 4, 8] cache with 4 > 1 rows filled" },
        { "values strided", "attention: keys [2, 6, 8] and values [2, 6, 8] must be one contiguous [kv, capacity >= 4, 8] cache with 4 > 1 rows filled" },
        { "values shape", "attention: keys [2, 6, 8] and values [2, 7, 8] must be one contiguous [kv, capacity >= 4, 8] cache with 4 > 1 rows filled" },
        { "filled > capacity", "attention: keys [2, 6, 8] and values [2, 6, 8] must be one contiguous [kv, capacity >= 7, 8] cache with 7 > 1 rows filled" },
        { "filled == past", "attention: keys [2, 6, 8] and values [2, 6, 8] must be one contiguous [kv, capacity >= 1, 8] cache with 1 > 1 rows filled" },
        { "past < 0", "attention: keys [2, 6, 8] and values [2, 6, 8] must be one contiguous [kv, capacity >= 4, 8] cache with 4 > -1 rows filled" },
        { "output strided", "attention: output [3, 32] must be [3, 32] contiguous" },
        { "output shape", "attention: output [3, 40] must be [3, 32] contiguous" },
    };

    [Theory]
    [MemberData(nameof(CausalRefusals))]
    public void Causal_attention_refuses_each_argument_that_is_not_what_it_reads_naming_it(string what, string message)
    {
        // the valid call: t = 3, heads 4, kv 2, hd 8, cache [2, 6, 8], past 1, filled 4
        var dt = DType.Float32;
        Tensor q = Tensor.Zeros(dt, 3, 32), keys = Tensor.Zeros(dt, 2, 6, 8), values = Tensor.Zeros(dt, 2, 6, 8), output = Tensor.Zeros(dt, 3, 32);
        int past = 1, filled = 4;
        Tensor Strided(Tensor x) => Tensor.Zeros(x.DType, [.. x.ShapeArray[..^1], 2 * x.Shape[^1]]).Narrow(x.Rank - 1, 0, x.Shape[^1]);
        switch (what)
        {
            case "keys dtype": keys = keys.To(DType.BFloat16); break;
            case "values dtype": values = values.To(DType.BFloat16); break;
            case "output dtype": output = output.To(DType.BFloat16); break;
            case "float16": q = q.To(DType.Float16); keys = keys.To(DType.Float16); values = values.To(DType.Float16); output = output.To(DType.Float16); break;
            case "q rank": q = Tensor.Zeros(dt, 3, 32, 1); break;
            case "q strided": q = Strided(q); break;
            case "q width": q = Tensor.Zeros(dt, 3, 36); output = Tensor.Zeros(dt, 3, 36); break;
            case "heads not a multiple": q = Tensor.Zeros(dt, 3, 24); output = Tensor.Zeros(dt, 3, 24); break;
            case "no heads": q = Tensor.Zeros(dt, 3, 0); output = Tensor.Zeros(dt, 3, 0); break;
            case "keys rank": keys = Tensor.Zeros(dt, 2, 6, 8, 1); values = Tensor.Zeros(dt, 2, 6, 8, 1); break;
            case "keys strided": keys = Strided(keys); break;
            case "values strided": values = Strided(values); break;
            case "values shape": values = Tensor.Zeros(dt, 2, 7, 8); break;
            case "filled > capacity": filled = 7; break;
            case "filled == past": filled = 1; break;
            case "past < 0": past = -1; break;
            case "output strided": output = Strided(output); break;
            case "output shape": output = Tensor.Zeros(dt, 3, 40); break;
        }
        var ex = Assert.Throws<ArgumentException>(() => Attention.CausalInto(q, keys, values, past, filled, 0.5f, output));
        Assert.Equal(message, ex.Message);
    }

    [Theory]
    [InlineData(DType.Float32, 1)]
    [InlineData(DType.Float32, 4)]
    [InlineData(DType.BFloat16, 4)]
    public void Causal_attention_on_the_row_kernel_equals_the_prefill_kernels_and_every_thread_count(DType dt, int threads)
    {
        // one query (decode) and 31 queries (below the blocked path's 32; 31 * 6 * 40 * 32 elements, past the one-task bound):
        // the row kernel's items spread over tasks; 40 queries through the tiled (hd 16) and blocked (hd 24) kernels against the row kernel
        foreach (var (t, hd) in new[] { (1, 16), (31, 32), (40, 16), (40, 24) })
        {
            int heads = 6, kv = 2, past = 9, cap = past + t + 3, filled = past + t - (t > 1 ? 2 : 0);
            var q = Tensor.Randn(DType.Float32, 11, t, heads * hd).To(dt);
            var keys = Tensor.Randn(DType.Float32, 12, kv, cap, hd).To(dt);
            var values = Tensor.Randn(DType.Float32, 13, kv, cap, hd).To(dt);
            var serial = Tensor.Zeros(dt, t, heads * hd);
            using (ComputeSettings.UseThreads(1))
                Attention.CausalInto(q, keys, values, past, filled, 0.25f, serial, prefillKernel: false);
            var got = Tensor.Zeros(dt, t, heads * hd);
            using (ComputeSettings.UseThreads(threads))
                Attention.CausalInto(q, keys, values, past, filled, 0.25f, got);
            if (t < Attention.BlockedMinTokens) Assert.True(got.BitwiseEquals(serial), $"t {t}: the row kernel's bits at {threads} threads");
            else
            {
                var g = got.ToFloatArray();
                var s = serial.ToFloatArray();
                for (int i = 0; i < g.Length; i++)
                    Assert.True(Math.Abs(g[i] - s[i]) <= (dt == DType.Float32 ? 1e-5 : 0.02) * (1 + Math.Abs(s[i])), $"t {t} hd {hd} [{i}]: {g[i]} vs {s[i]}");
            }
            // a row's reference: query i of head h sees keys 0..min(past+i, filled-1) of kv head h / 3
            var qa = q.ToFloatArray(); var ka = keys.ToFloatArray(); var va = values.ToFloatArray(); var ga = got.ToFloatArray();
            foreach (int i in new[] { 0, t - 1 })
                foreach (int h in new[] { 0, heads - 1 })
                {
                    int g = h / (heads / kv), n = Math.Min(past + i + 1, filled);
                    var sc = new double[n];
                    for (int j = 0; j < n; j++)
                    {
                        double dot = 0;
                        for (int c = 0; c < hd; c++) dot += qa[i * heads * hd + h * hd + c] * ka[(g * cap + j) * hd + c];
                        sc[j] = dot * 0.25;
                    }
                    double m = sc.Max(), z = sc.Sum(x => Math.Exp(x - m));
                    for (int c = 0; c < hd; c++)
                    {
                        double o = 0;
                        for (int j = 0; j < n; j++) o += Math.Exp(sc[j] - m) / z * va[(g * cap + j) * hd + c];
                        double tol = dt == DType.Float32 ? 1e-4 : 0.05;
                        Assert.True(Math.Abs(ga[i * heads * hd + h * hd + c] - o) <= tol * (1 + Math.Abs(o)), $"t {t} query {i} head {h} [{c}]: {ga[i * heads * hd + h * hd + c]} vs {o}");
                    }
                }
        }
    }
}
