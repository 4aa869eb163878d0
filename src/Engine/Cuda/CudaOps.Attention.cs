using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>The attention drivers: RoPE, the fused grouped-query attention over the KV cache, and the eager masks.</summary>
public static partial class CudaOps
{
    /// <summary>
    /// apply_rotary_pos_emb: x [..., t, d] (any strides), cos/sin broadcastable to it with shape [.., t, d] where every
    /// leading dim is 1 (one position table for all planes), in x's dtype. Returns contiguous x's shape.
    /// </summary>
    public static Tensor Rope(Tensor x, Tensor cos, Tensor sin)
    {
        var device = DeviceOf("rope", x, cos, sin);
        int d = x.Size(-1), t = x.Rank >= 2 ? x.Size(-2) : 1;
        if (d % 2 != 0) throw new ArgumentException($"rope: head dim must be even, got shape {Shape.Format(x.Shape)}");
        if (cos.NumEl != t * d || sin.NumEl != t * d)
            throw new ArgumentException($"rope: cos {Shape.Format(cos.Shape)} / sin {Shape.Format(sin.Shape)} must hold one [{t}, {d}] table for x {Shape.Format(x.Shape)}");
        var c = cos.DType == x.DType ? cos.Contiguous() : cos.To(x.DType);
        var s = sin.DType == x.DType ? sin.Contiguous() : sin.To(x.DType);
        var x3 = x.Rank == 3 ? x : x.Reshape(-1, t, d);
        var y = CudaTensors.Empty(device, x.DType, x.ShapeArray);
        long n = y.NumEl;
        using var args = new KernelArgs().Ptr(x3).Add(TensorDesc.Of(x3)).Ptr(c).Ptr(s).Ptr(y).Add(n);
        var f = device.Function($"rope/{CudaSource.Token(x.DType)}", "rope", () => CudaSource.Instantiate(AttentionKernels.Rope, x.DType));
        args.Launch(device, f, "rope", GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>
    /// Grouped-query attention of q [heads, t, hd] against k, v [kvHeads, s, hd] (views of the cache), causal from
    /// position <paramref name="past"/>, sliding <paramref name="window"/> (0: none). Returns [heads, t, hd] contiguous.
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, int past, int window, float scale)
    {
        var device = DeviceOf("attention", q, k, v);
        if (q.Rank != 3 || k.Rank != 3 || v.Rank != 3 || k.Size(2) != q.Size(2) || v.Size(2) != q.Size(2) || k.Size(0) != v.Size(0)
            || k.Size(1) != v.Size(1) || q.Size(0) % k.Size(0) != 0 || q.DType != k.DType || q.DType != v.DType)
            throw new ArgumentException($"attention: q [heads, t, hd], k and v [kv, s, hd] with heads % kv == 0 and one dtype; got {q}, {k}, {v}");
        int s = k.Size(1);
        var y = CudaTensors.Empty(device, q.DType, q.ShapeArray);
        var f = device.Function($"attention/{CudaSource.Token(q.DType)}", "attention", () => CudaSource.Instantiate(AttentionKernels.Attention, q.DType));
        uint shared = (uint)(s * sizeof(float));
        if (shared > 48 * 1024) Interop.CudaDriver.FuncSetMaxDynamicShared(f, (int)shared, "attention");
        using var args = new KernelArgs().Ptr(q).Add(TensorDesc.Of(q)).Ptr(k).Add(TensorDesc.Of(k)).Ptr(v).Add(TensorDesc.Of(v)).Ptr(y)
            .Add(past).Add(window).Add(scale);
        args.Launch(device, f, "attention", ((uint)q.Size(1), (uint)q.Size(0), 1), (128, 1, 1), shared);
        return y;
    }

    /// <summary>In place on contiguous float32 scores [planes, t, s]: -inf where key j &gt; past + i.</summary>
    public static void MaskFuture(Tensor scores, int t, int s, int past)
    {
        var device = DeviceOf("mask_future", scores);
        if (scores.DType != DType.Float32 || !scores.IsContiguous) throw new ArgumentException($"mask_future: contiguous float32 scores, got {scores}");
        long n = scores.NumEl;
        using var args = new KernelArgs().Ptr(scores).Add(t).Add(s).Add(past).Add(n);
        var f = device.Function("mask_future", "mask_future", () => CudaSource.Prelude + AttentionKernels.MaskFuture);
        args.Launch(device, f, "mask_future", GridFor(device, n), (Threads, 1, 1));
    }

    /// <summary>
    /// The eager attention mask in place on contiguous float32 scores [planes, t, s] (causal from <paramref name="past"/>,
    /// a sliding <paramref name="window"/> (null: none), Gemma4's bidirectional vision <paramref name="blocks"/> of the t new
    /// rows, widening every layer (Gemma 3's rule) or, with <paramref name="blocksOnSlidingLayersOnly"/>, sliding layers only
    /// inside the window (Gemma 4's rule; see Gemma4VisionMask)).
    /// </summary>
    public static void AttentionMask(Tensor scores, int t, int s, int past, int? window, int[]? blocks = null, bool blocksOnSlidingLayersOnly = false)
    {
        var device = FirstDeviceOf("attention_mask", scores);
        if (scores.DType != DType.Float32 || !scores.IsContiguous || scores.Size(-1) != s || scores.Size(-2) != t)
            throw new ArgumentException($"attention_mask: contiguous float32 scores [.., {t}, {s}], got {scores}");
        if (blocks is not null && blocks.Length != t) throw new ArgumentException($"attention_mask: {blocks.Length} block ids for {t} rows");
        var b = blocks is null ? null : CudaTensors.Upload(Tensor.FromArray(blocks, blocks.Length), device);
        long n = scores.NumEl;
        var f = device.Function("attention_mask", "attention_mask", () => CudaSource.Prelude + AttentionKernels.AttentionMask);
        using var args = new KernelArgs().Ptr(scores).Add(t).Add(s).Add(past).Add(window ?? 0).Add(b is null ? 0 : CudaTensors.Address(b)).Add(blocksOnSlidingLayersOnly ? 1 : 0).Add(n);
        args.Launch(device, f, "attention_mask", GridFor(device, n), (Threads, 1, 1));
    }
}
