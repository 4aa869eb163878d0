using Harness.Engine.Config;
using Harness.Engine.Cuda;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Models.Llama;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Bench;

/// <summary>
/// check-gpu's checks of graph decoding: the kernels that read the position from device memory equal their host-position
/// twins bit for bit, and <see cref="CudaGraphDecoder"/> picks the same greedy tokens as the plain loop for every family.
/// </summary>
public static class DecodeSelfCheck
{
    /// <summary>rows_at, kv_append_at and attention_at against Narrow, CopyFrom and CudaOps.Attention, bit for bit.</summary>
    public static string? DevicePositionKernels(CudaDevice d)
    {
        foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
        {
            int heads = 4, kv = 2, hd = 16, cap = 11, past = 6, t = 1;
            var pos = Tensor.FromArray(new[] { past }, 1).ToDevice(d);
            var cosT = GpuSelfCheck.Rand(dt, cap, hd).ToDevice(d);
            var sinT = GpuSelfCheck.Rand(dt, cap, hd).ToDevice(d);
            var (c, s) = CudaDecodeOps.RowsAt(cosT, sinT, pos, 2);
            if ((GpuSelfCheck.Bitwise($"{dt.TorchName()} rows_at cos", c, cosT.Narrow(0, past, 2).Unsqueeze(0))
                 ?? GpuSelfCheck.Bitwise($"{dt.TorchName()} rows_at sin", s, sinT.Narrow(0, past, 2).Unsqueeze(0))) is { } e) return e;
            // append one token at the device position into a cache, then attend over past + 1 keys
            var keys = GpuSelfCheck.Rand(dt, kv, cap, hd);
            var values = GpuSelfCheck.Rand(dt, kv, cap, hd);
            var k = GpuSelfCheck.Rand(dt, 1, t, kv, hd).Transpose(1, 2).Select(0, 0);   // [kv, t, hd] strided, as in the model
            var v = GpuSelfCheck.Rand(dt, 1, t, kv, hd).Transpose(1, 2).Select(0, 0);
            var ck = keys.ToDevice(d);
            var cv = values.ToDevice(d);
            CudaDecodeOps.AppendAt(ck, cv, k.Contiguous().ToDevice(d), v.ToDevice(d).Transpose(0, 1).Contiguous().Transpose(0, 1), pos);
            keys.Narrow(1, past, t).CopyFrom(k);
            values.Narrow(1, past, t).CopyFrom(v);
            if ((GpuSelfCheck.Bitwise($"{dt.TorchName()} kv_append_at keys", ck, keys)
                 ?? GpuSelfCheck.Bitwise($"{dt.TorchName()} kv_append_at values", cv, values)) is { } e2) return e2;
            // rope of q and k plus the append in one kernel == rope, rope, kv_append_at (q, k, v strided views of one qkv row)
            {
                var qkv = GpuSelfCheck.Rand(dt, t, (heads + 2 * kv) * hd).ToDevice(d);
                var qv = qkv.Narrow(-1, 0, heads * hd).View(1, t, heads, hd).Transpose(1, 2);
                var kv4 = qkv.Narrow(-1, heads * hd, kv * hd).View(1, t, kv, hd).Transpose(1, 2);
                var vv4 = qkv.Narrow(-1, (heads + kv) * hd, kv * hd).View(1, t, kv, hd).Transpose(1, 2);
                var (c1, s1) = CudaDecodeOps.RowsAt(cosT, sinT, pos, t);
                var ck1 = keys.ToDevice(d);
                var cv1 = values.ToDevice(d);
                var ck2 = keys.ToDevice(d);
                var cv2 = values.ToDevice(d);
                var qWant = Rotary.Apply(qv, c1, s1);
                CudaDecodeOps.AppendAt(ck1, cv1, Rotary.Apply(kv4, c1, s1).Select(0, 0), vv4.Select(0, 0), pos);
                var qGot = CudaDecodeOps.RopeAppendAt(qv.Select(0, 0), kv4.Select(0, 0), vv4.Select(0, 0), c1, s1, ck2, cv2, pos);
                if ((GpuSelfCheck.Bitwise($"{dt.TorchName()} rope_append_at q", qGot, qWant.Select(0, 0))
                     ?? GpuSelfCheck.Bitwise($"{dt.TorchName()} rope_append_at keys", ck2, ck1)
                     ?? GpuSelfCheck.Bitwise($"{dt.TorchName()} rope_append_at values", cv2, cv1)) is { } er) return er;
            }
            var q = GpuSelfCheck.Rand(dt, heads, t, hd).ToDevice(d);
            float scale = (float)Math.Pow(hd, -0.5);
            var want = CudaOps.Attention(q, ck.Narrow(1, 0, past + t), cv.Narrow(1, 0, past + t), past, 0, scale);
            var got = CudaDecodeOps.AttentionAt(q, ck, cv, pos, 0, scale);
            if (GpuSelfCheck.Bitwise($"{dt.TorchName()} attention_at", got, want) is { } e3) return e3;
            // both device-position kernels (tiled and simple) equal the host-position one over several chunks, head dims,
            // windows, strided and unaligned layouts
            foreach (var (h, kvh, hdim, capacity, p0, window, strided) in new[]
                     { (32, 4, 64, 300, 260, 0, false), (8, 2, 128, 70, 65, 0, true), (4, 1, 256, 40, 37, 5, false), (6, 3, 20, 50, 44, 0, false) })
            {
                var qq = GpuSelfCheck.Rand(dt, h, 1, hdim).ToDevice(d);
                var kk = GpuSelfCheck.Rand(dt, kvh, capacity, hdim).ToDevice(d);
                var vv = GpuSelfCheck.Rand(dt, kvh, capacity, hdim).ToDevice(d);
                if (strided) (kk, vv) = (kk.Transpose(0, 1).Contiguous().Transpose(0, 1), vv.Transpose(0, 1).Contiguous().Transpose(0, 1));
                var pp = Tensor.FromArray(new[] { p0 }, 1).ToDevice(d);
                float sc = (float)Math.Pow(hdim, -0.5);
                var w = CudaOps.Attention(qq, kk.Narrow(1, 0, p0 + 1), vv.Narrow(1, 0, p0 + 1), p0, window, sc);
                foreach (var useSimple in new[] { false, true })
                {
                    var g = CudaDecodeOps.AttentionAt(qq, kk, vv, pp, window, sc, simple: useSimple);
                    if (GpuSelfCheck.Bitwise($"{dt.TorchName()} attention_at ({(useSimple ? "simple" : "tiled")}, heads {h}/{kvh}, hd {hdim}, past {p0}, window {window}{(strided ? ", strided" : "")})", g, w) is { } e4)
                        return e4;
                }
            }
        }
        return null;
    }

    /// <summary>
    /// A recorded tiny model of a family on the GPU: the one decode loop driven by the model (the plain loop) and by a
    /// <see cref="CudaGraphDecoder"/> over it (the graph loop) pick the same tokens, top-k ids and log-probability bits;
    /// twice (the first run captures, the second replays only), then the bench's path (the argmax fed back on the device)
    /// likewise. The graph must really replay: a capture that fell back to eager steps fails the check with its reason.
    /// </summary>
    /// <param name="image">Qwen2-VL: the prompt holds an image (rope_deltas -4: decode positions lag the cache).</param>
    /// <param name="plantOffByOne">The planted bug: the graph loop's steps run one position early (the host's position
    /// rewound by one after the prompt), which the check must report.</param>
    public static string? GraphDecode(CudaDevice d, string model, bool image = false, bool plantOffByOne = false)
    {
        var dir = GpuSelfCheck.FindModel(model);
        if (dir is null) return $"fixtures/models/{model} not found (run from the repository or the bundle)";
        const int steps = 12;
        using var g = GraphModel.Open(dir, d, dtype: null, positions: 48);
        var rng = new SplitMix64(20);
        var text = Enumerable.Range(0, 8).Select(_ => (long)(1 + rng.NextInt(g.VocabSize - 1))).ToArray();
        var (promptTokens, prefill) = image
            ? (g.ImagePrompt ?? throw new ArgumentException($"{model}: no image prompt for {g.Family}"))(text)
            : (text.Length, () => g.Prefill(text));
        var request = new DecodeRequest(steps, 4);
        var plain = DecodeLoop.Run(g.Model, promptTokens, prefill, request);
        using var graph = new CudaGraphDecoder(g.Model);
        Func<Tensor> graphPrefill = plantOffByOne ? () => { var l = prefill(); g.Model.Rewind(g.Model.Position - 1); return l; } : prefill;
        for (int round = 0; round < 2; round++)
        {
            var got = DecodeLoop.Run(graph, promptTokens, graphPrefill, request);
            if (graph.FallbackReason is { } why) return $"{model}: the decode step was not captured: {why}";
            if (Differ(plain, got) is { } diff) return $"{model} round {round} (graph loop vs plain loop): {diff}";
            if (g.Model.Position != promptTokens + steps - 1)
                return $"{model}: position {g.Model.Position} after the graph loop, expected {promptTokens + steps - 1}";
        }
        if (graph.Replays < steps - 2) return $"{model}: {graph.Replays} replays in two loops of {steps - 1} decode steps";
        if (image) return null;
        // the bench's path: the argmax fed back on the device, one read per token
        g.Model.StartSequence(text.Length + steps);
        long first = TopK.Forward(g.Prefill(text).Select(0, 0), 1).Indices.ToInt64Array()[0];
        var fast = graph.Decode(first, steps - 1);
        if (first != plain.Tokens[0] || !fast.SequenceEqual(plain.Tokens.Skip(1)))
            return $"{model} (device-fed graph decode): tokens {first},{string.Join(",", fast)} differ from the plain loop's {string.Join(",", plain.Tokens)}";
        return null;
    }

    /// <summary>The graph check fails on its planted bug (steps one position early) for every family: null when it does.</summary>
    public static string? GraphDecodeCatchesOffByOne(CudaDevice d)
    {
        foreach (var model in new[] { "tiny-llama-bf16", "tiny-gemma3n-bf16", "tiny-gemma4-e2b-like-bf16", "tiny-gemma4-moe-bf16", "tiny-qwen2-vl-bf16" })
            if (GraphDecode(d, model, plantOffByOne: true) is not { } caught)
                return $"{model}: the graph check passed a graph loop whose steps ran one position early";
            else if (!caught.Contains("(graph loop vs plain loop)", StringComparison.Ordinal))
                return $"{model}: the planted off-by-one was not caught by the token comparison but by: {caught}";
        return null;
    }

    /// <summary>
    /// Gemma4's MoE block as a graph step runs it (Gemma4Experts.ForwardIndexed: IndexedExperts' kernels, the expert ids
    /// never read back) on the tiny MoE checkpoints, fp32 and bf16, every layer, several tokens routed by the router on
    /// the GPU: equal bit for bit to the per-expert loop on the GPU (whose one-row linears take the gemv kernel that
    /// expert_gemv's 16-byte path repeats), close to the host's indexed block on the same routing; the planted bug (the
    /// next expert read) is seen. Then the kernels alone: expert_gemv's scalar path (odd K, an unaligned input) against
    /// the host op, sum_in_id_order and the router's take bit for bit, and an expert id out of range gives NaN, not a
    /// read outside the weights.
    /// </summary>
    public static string? IndexedExperts(CudaDevice d)
    {
        foreach (var (name, tol) in new[] { ("tiny-gemma4-moe-fp32", 1e-5), ("tiny-gemma4-moe-bf16", 2e-2) })
        {
            var dir = GpuSelfCheck.FindModel(name);
            if (dir is null) return $"fixtures/models/{name} not found (run from the repository or the bundle)";
            using var gpu = GraphModel.Open(dir, d, dtype: null, positions: 16);
            using var host = GraphModel.Open(dir, gpu: null, dtype: null, positions: 16);
            var onGpu = ((Harness.Engine.Models.Gemma4.Gemma4TextDecoder)gpu.Model).Model;
            var onHost = ((Harness.Engine.Models.Gemma4.Gemma4TextDecoder)host.Model).Model;
            var dt = onGpu.DType;
            for (int l = 0; l < onGpu.Layers.Count; l++)
            {
                var (router, experts, hostExperts) = (onGpu.Layers[l].Router!, onGpu.Layers[l].Experts!, onHost.Layers[l].Experts!);
                for (int r = 0; r < 4; r++)
                {
                    string what = $"{name} layer {l} token {r}";
                    var xh = Tensor.Normal(DType.Float32, (ulong)(50 + 7 * l + r), 0f, 1f, 1, onGpu.Config.HiddenSize).To(dt);
                    var x = xh.ToDevice(d);
                    var (_, w, idx) = router.Forward(x);
                    var got = experts.ForwardIndexed(x, w, idx);
                    if (GpuSelfCheck.Bitwise($"{what}: indexed experts vs the per-expert loop on the GPU", got, experts.ForwardLoop(x, w, idx)) is { } e) return e;
                    if (GpuSelfCheck.Close($"{what}: indexed experts on the GPU vs on the host", got, hostExperts.ForwardIndexed(xh, w.ToHost(), idx.ToHost()), tol) is { } e2) return e2;
                    var shifted = Tensor.FromArray(idx.ToHost().ToInt64Array().Select(i => (i + 1) % onGpu.Config.NumExperts).ToArray(), idx.ShapeArray).ToDevice(d);
                    if (GpuSelfCheck.Bitwise("planted", experts.ForwardIndexed(x, w, shifted), experts.ForwardLoop(x, w, idx)) is null)
                        return $"{what}: an indexed block reading the next expert passed the bitwise comparison";
                }
            }
        }
        foreach (var (dt, tol) in new[] { (DType.Float32, 1e-6), (DType.BFloat16, 1e-2) })
        {
            string n = dt.TorchName();
            var stacked = GpuSelfCheck.Rand(dt, 3, 5, 14);                                           // [E, N, K]
            var x = GpuSelfCheck.Rand(dt, 2, 15).Narrow(1, 1, 13);                                   // unaligned rows, odd K
            var ids = Tensor.FromArray(new long[] { 2, 0 }, 2);
            var want = Engine.Ops.IndexedExperts.Gemv(x, stacked.Narrow(2, 0, 13), ids);
            var got = CudaGemm.ExpertGemv(x.ToDevice(d), stacked.ToDevice(d).Narrow(2, 0, 13), ids.ToDevice(d));
            if (GpuSelfCheck.Close($"{n} expert_gemv (scalar path, K 13, one row per slot)", got, want, tol) is { } e) return e;
            var shared = CudaGemm.ExpertGemv(x.Narrow(0, 1, 1).ToDevice(d), stacked.ToDevice(d).Narrow(2, 0, 13), ids.ToDevice(d));
            if (GpuSelfCheck.Close($"{n} expert_gemv (scalar path, one row for every slot)", shared,
                    Engine.Ops.IndexedExperts.Gemv(x.Narrow(0, 1, 1), stacked.Narrow(2, 0, 13), ids), tol) is { } e1) return e1;
            var bad = CudaGemm.ExpertGemv(x.ToDevice(d), stacked.ToDevice(d).Narrow(2, 0, 13), Tensor.FromArray(new long[] { 1, 3 }, 2).ToDevice(d)).ToHost().To(DType.Float32).ToFloatArray();
            if (bad.Take(5).Any(float.IsNaN) || !bad.Skip(5).All(float.IsNaN)) return $"{n} expert_gemv: an expert id out of range did not give exactly its row NaN";
            var y = GpuSelfCheck.Rand(dt, 5, 300);
            var slots = Tensor.FromArray(new long[] { 7, 1, 4, 1, 0 }, 5);
            if (GpuSelfCheck.Bitwise($"{n} sum_in_id_order", Engine.Ops.IndexedExperts.SumInIdOrder(y.ToDevice(d), slots.ToDevice(d)),
                    Engine.Ops.IndexedExperts.SumInIdOrder(y, slots)) is { } e3) return e3;
            var table = GpuSelfCheck.Rand(dt, 8);
            if (GpuSelfCheck.Bitwise($"{n} take (index_select at device ids)", Engine.Ops.IndexedExperts.Take(table.ToDevice(d), slots.ToDevice(d)),
                    table.IndexSelect(0, slots)) is { } e4) return e4;
        }
        return null;
    }

    /// <summary>Where two generations differ (tokens, top-k ids, log-probability bits), or null.</summary>
    public static string? Differ(Generation want, Generation got)
    {
        if (!got.Tokens.SequenceEqual(want.Tokens))
            return $"tokens {string.Join(",", got.Tokens)} differ from {string.Join(",", want.Tokens)}";
        for (int i = 0; i < want.TopKIds.GetLength(0); i++)
            for (int j = 0; j < want.TopKIds.GetLength(1); j++)
            {
                if (got.TopKIds[i, j] != want.TopKIds[i, j]) return $"step {i} top-{j + 1} id {got.TopKIds[i, j]} differs from {want.TopKIds[i, j]}";
                if (BitConverter.SingleToInt32Bits(got.TopKLogprobs[i, j]) != BitConverter.SingleToInt32Bits(want.TopKLogprobs[i, j]))
                    return $"step {i} top-{j + 1} logprob {got.TopKLogprobs[i, j]:R} differs from {want.TopKLogprobs[i, j]:R} (bits)";
            }
        return null;
    }
}
