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
/// twins bit for bit, and <see cref="LlamaCudaGraphDecoder"/> picks the same greedy tokens as the plain loop.
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

    /// <summary>The recorded tiny Llama on the GPU: greedy tokens of the plain loop vs the graph decoder (twice: capture, then replay only).</summary>
    public static string? GraphDecode(CudaDevice d, string model)
    {
        var dir = GpuSelfCheck.FindModel(model);
        if (dir is null) return $"fixtures/models/{model} not found (run from the repository or the bundle)";
        var config = HfConfig.Load(Path.Combine(dir, "config.json")).Text;
        using var checkpoint = Checkpoint.Open(dir);
        var weights = new DeviceWeights(new CheckpointWeights(checkpoint), d);
        var prompt = Tensor.FromArray(new long[] { 1, 17, 42, 99, 5, 150, 7, 3 }, 8);
        const int steps = 12;
        var m = new LlamaForCausalLM(weights, config, ParallelContext.Single, maxPositions: 32);
        long Argmax(Tensor logits, int row) => TopK.Forward(logits.Select(0, row), 1).Indices.ToInt64Array()[0];
        long first = Argmax(m.Forward(prompt, 8)!, 7);
        var eager = new long[steps];
        long next = first;
        for (int s = 0; s < steps; s++) next = eager[s] = Argmax(m.Forward(Tensor.FromArray([next], 1), 1)!, 0);
        using var decoder = new LlamaCudaGraphDecoder(m);
        for (int round = 0; round < 2; round++)
        {
            m.Reset();
            long f = Argmax(m.Forward(prompt, 8)!, 7);
            if (f != first) return $"{model}: the prompt's argmax moved after Reset ({first} then {f})";
            var graph = decoder.Decode(f, steps);
            if (decoder.FallbackReason is { } why) return $"{model}: the decode step was not captured: {why}";
            if (!graph.SequenceEqual(eager))
                return $"{model} round {round}: graph tokens {string.Join(",", graph)} differ from the plain loop's {string.Join(",", eager)}";
            if (m.Position != 8 + steps) return $"{model}: position {m.Position} after decoding, expected {8 + steps}";
        }
        return null;
    }
}
