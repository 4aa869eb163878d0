using System.Runtime.InteropServices;
using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// Attention pieces for the CPU that read and write the tensors where they lie: no per-head copies, no transposes.
/// <list type="bullet">
/// <item><see cref="RopeIntoCache"/>: apply_rotary_pos_emb on q and k straight from the fused qkv projection's output,
/// q into a [t, heads*hd] buffer, k and v into the KV cache's next rows.</item>
/// <item><see cref="CausalInto"/>: HF's eager causal grouped-query attention over the cache (<see cref="K.Attention"/>),
/// written as [t, heads*hd] (the layout o_proj reads: HF's transpose(1, 2).reshape(*input_shape, -1)).</item>
/// </list>
/// Both are the normal-mode fast path (float32 and bfloat16 on the host); batch-invariant mode keeps the matmul/softmax path
/// with its fixed reduction order (callers check <see cref="Supports"/>).
/// </summary>
public static class Attention
{
    /// <summary>Whether the fused host path applies: host tensors of float32 or bfloat16, normal (not batch-invariant) mode.</summary>
    public static bool Supports(Tensor q) =>
        OpBackend.OnHost(q) && q.DType is DType.Float32 or DType.BFloat16 && !ComputeSettings.BatchInvariant;

    /// <summary>
    /// q_embed = (q * cos) + (rotate_half(q) * sin) for every head of every token (each of the three torch ops rounded to
    /// the dtype, as <see cref="Rotary.Apply"/>), k likewise, and v as is:
    /// <code>
    /// qOut[i, h*hd:(h+1)*hd]         = rope(q[i, h*hd:(h+1)*hd], cos[i], sin[i])      i &lt; t, h &lt; heads
    /// cacheK[g, past + i, :]         = rope(k[i, g*hd:(g+1)*hd], cos[i], sin[i])      i &lt; real, g &lt; kv
    /// cacheV[g, past + i, :]         = v[i, g*hd:(g+1)*hd]
    /// </code>
    /// Shapes: q [t, heads*hd], k and v [t, kv*hd] (last dim contiguous, any row stride: views of the fused qkv output);
    /// cos, sin [t, hd] or [1, t, hd] in the same dtype; qOut [t, heads*hd] contiguous; cacheK, cacheV [kv, capacity, hd]
    /// contiguous with past + real &lt;= capacity. All of one dtype (float32 or bfloat16).
    /// </summary>
    public static void RopeIntoCache(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor qOut, Tensor cacheK, Tensor cacheV,
        int past, int real)
    {
        int t = q.Shape[0], kv = cacheK.Shape[0], hd = cacheK.Shape[2], heads = q.Shape[1] / hd;
        if (cos.Rank == 3) { cos = cos.Select(0, 0); sin = sin.Select(0, 0); }
        var dt = q.DType;
        SameDType(k, dt, "k"); SameDType(v, dt, "v"); SameDType(cos, dt, "cos"); SameDType(sin, dt, "sin");
        SameDType(qOut, dt, "q_out"); SameDType(cacheK, dt, "cache k"); SameDType(cacheV, dt, "cache v");
        if (q.Rank != 2 || k.Rank != 2 || v.Rank != 2 || q.Shape[1] != heads * hd || k.Shape[1] != kv * hd || v.Shape[1] != kv * hd
            || k.Shape[0] != t || v.Shape[0] != t || q.Stride(1) != 1 || k.Stride(1) != 1 || v.Stride(1) != 1)
            throw new ArgumentException($"rope_into_cache: q {Shape.Format(q.Shape)}, k {Shape.Format(k.Shape)}, v {Shape.Format(v.Shape)} " +
                                        $"must be [t, heads*{hd}], [t, {kv}*{hd}] with contiguous rows");
        if (cos.Rank != 2 || cos.Shape[0] != t || cos.Shape[1] != hd || !cos.IsContiguous || !Shape.SequenceEqual(cos.Shape, sin.Shape) || !sin.IsContiguous)
            throw new ArgumentException($"rope_into_cache: cos/sin {Shape.Format(cos.Shape)} must be [{t}, {hd}] contiguous");
        if (!qOut.IsContiguous || !Shape.SequenceEqual(qOut.Shape, [t, heads * hd]))
            throw new ArgumentException($"rope_into_cache: q_out {Shape.Format(qOut.Shape)} must be [{t}, {heads * hd}] contiguous");
        if (!cacheK.IsContiguous || !cacheV.IsContiguous || !Shape.SequenceEqual(cacheK.Shape, cacheV.Shape) || past < 0 || real > t
            || past + real > cacheK.Shape[1])
            throw new ArgumentException($"rope_into_cache: cache {Shape.Format(cacheK.Shape)} cannot take {real} rows after {past}");
        if (hd % 2 != 0) throw new ArgumentException($"rope_into_cache: head dim must be even, got {hd}");

        var args = new RopeArgs(q, k, v, cos, sin, qOut, cacheK, cacheV, past, real, heads, kv, hd);
        if (ComputeSettings.Threads <= 1 || t < 2 || (long)t * (heads + 2 * kv) * hd < K.RowParallel.MinParallelElements)
            for (int i = 0; i < t; i++) RopeToken(args, i);                        // decode: no closure, no allocation
        else RopeTokens(args, t);
    }

    private readonly record struct RopeArgs(Tensor Q, Tensor K, Tensor V, Tensor Cos, Tensor Sin, Tensor QOut, Tensor CacheK, Tensor CacheV,
        int Past, int Real, int Heads, int Kv, int Hd);

    private static void RopeTokens(RopeArgs a, int t) =>                             // tokens are independent
        K.RowParallel.For(t, (a.Heads + 2 * a.Kv) * a.Hd, ComputeSettings.Threads, i => RopeToken(a, i));

    // token i: its q heads into QOut, its k (rotated) and v heads into the cache's row Past + i (when i < Real)
    private static void RopeToken(in RopeArgs a, int i)
    {
        int hd = a.Hd, cap = a.CacheK.Shape[1];
        var dt = a.Q.DType;
        Span<float> row = stackalloc float[hd], y = stackalloc float[hd], c = stackalloc float[hd], s = stackalloc float[hd];
        Load(a.Cos, a.Cos.Offset + i * hd, c);
        Load(a.Sin, a.Sin.Offset + i * hd, s);
        for (int h = 0; h < a.Heads; h++)
        {
            Load(a.Q, a.Q.Offset + i * a.Q.Stride(0) + h * hd, row);
            K.Rotary.ApplyRow(row, c, s, y, dt);
            Store(y, a.QOut, a.QOut.Offset + (i * a.Heads + h) * hd);
        }
        if (i >= a.Real) return;
        for (int g = 0; g < a.Kv; g++)
        {
            int dst = (g * cap + a.Past + i) * hd;
            Load(a.K, a.K.Offset + i * a.K.Stride(0) + g * hd, row);
            K.Rotary.ApplyRow(row, c, s, y, dt);
            Store(y, a.CacheK, a.CacheK.Offset + dst);
            Load(a.V, a.V.Offset + i * a.V.Stride(0) + g * hd, row);
            Store(row, a.CacheV, a.CacheV.Offset + dst);
        }
    }

    /// <summary>
    /// HF's eager causal attention for one sequence, every head in one pass (<see cref="K.Attention.Row{T, TKv}"/> per query
    /// row and head): query i (absolute position past + i) of head h sees keys 0..past+i of kv head h / (heads / kv)
    /// (repeat_kv), and no more than the <paramref name="filled"/> rows of the cache (SP padding queries after the real tokens
    /// see every real key; their outputs are dropped), so with n = min(past + i + 1, filled)
    /// <code>output[i, h*hd:(h+1)*hd] = round(softmax(round(round(q[i,h] . K[g, :n]^T) * scale)).round @ V[g, :n])</code>
    /// Shapes: q [t, heads*hd] contiguous; keys, values [kv, capacity, hd] contiguous (the cache; rows past+t.. unread);
    /// output [t, heads*hd] contiguous. One dtype (float32 or bfloat16); heads a multiple of kv.
    /// </summary>
    /// <param name="prefillKernel">From <see cref="BlockedMinTokens"/> query tokens on, the prefill kernel (tiled, or
    /// GEMM-blocked) instead of the row kernel: the same function, so only A/B timing and its test turn it off.</param>
    public static void CausalInto(Tensor q, Tensor keys, Tensor values, int past, int filled, float scale, Tensor output,
        bool prefillKernel = true)
    {
        int t = q.Shape[0], kv = keys.Shape[0], hd = keys.Shape[2], heads = q.Shape[1] / hd;
        if (q.DType != keys.DType || q.DType != values.DType || q.DType != output.DType || q.DType is not (DType.Float32 or DType.BFloat16))
            throw new ArgumentException($"attention: q, keys, values and output must share float32 or bfloat16, got {q.DType.TorchName()}, " +
                                        $"{keys.DType.TorchName()}, {values.DType.TorchName()}, {output.DType.TorchName()}");
        if (q.Rank != 2 || !q.IsContiguous || q.Shape[1] != heads * hd || heads % kv != 0 || heads == 0)
            throw new ArgumentException($"attention: q {Shape.Format(q.Shape)} must be [t, heads*{hd}] contiguous with heads a multiple of {kv}");
        if (keys.Rank != 3 || !keys.IsContiguous || !values.IsContiguous || !Shape.SequenceEqual(keys.Shape, values.Shape) || filled > keys.Shape[1] || filled <= past || past < 0)
            throw new ArgumentException($"attention: keys {Shape.Format(keys.Shape)} and values {Shape.Format(values.Shape)} must be one contiguous " +
                                        $"[kv, capacity >= {filled}, {hd}] cache with {filled} > {past} rows filled");
        if (!output.IsContiguous || !Shape.SequenceEqual(output.Shape, q.Shape))
            throw new ArgumentException($"attention: output {Shape.Format(output.Shape)} must be {Shape.Format(q.Shape)} contiguous");

        if (t >= BlockedMinTokens && prefillKernel)
        {
            if (hd % 16 == 0) Tiled(q, keys, values, past, filled, scale, output, t, heads, kv, hd);
            else Blocked(q, keys, values, past, filled, scale, output, t, heads, kv, hd);
            return;
        }
        var job = Job ??= new AttentionJob();
        job.Set(q, keys, values, past, filled, scale, output, t, heads, kv, hd);
        int tasks = (int)Math.Min(Math.Max(1, ComputeSettings.Threads), (long)t * heads);
        if ((long)t * heads * filled * hd < 1 << 17) tasks = 1;  // too small to share (a worker's wake-up costs more)
        job.Tasks = tasks;
        try
        {
            GemmThreadPool.Shared.Run(job, tasks);
        }
        finally
        {
            job.Clear();
        }
    }

    /// <summary>From this many query tokens on (prefill), <see cref="CausalInto"/> takes the blocked GEMM path.</summary>
    public const int BlockedMinTokens = 32;

    private const int BlockTokens = 128;

    // Prefill: per kv head g and block of query tokens [i0, i1), the group's queries as one [rows, hd] matrix
    // (row r = (i - i0) * group + hh is head g*group + hh of token i), scores against the keys that block can see with the
    // engine's GEMM, then the row softmax (K.Attention.SoftmaxRow: the same roundings as the row kernel) with the causal
    // limit per row, then probs @ V with the GEMM, scattered into output[i, h*hd:(h+1)*hd]. Equal to the row kernel but
    // for the order of the dot products and of the sum over keys (the GEMM's).
    private static void Blocked(Tensor q, Tensor keys, Tensor values, int past, int filled, float scale, Tensor output,
        int t, int heads, int kv, int hd)
    {
        int group = heads / kv, width = heads * hd, cap = keys.Shape[1];
        var dt = q.DType;
        for (int g = 0; g < kv; g++)
        {
            var kg = keys.Select(0, g);                                   // [capacity, hd]
            var vg = values.Select(0, g);
            for (int i0 = 0; i0 < t; i0 += BlockTokens)
            {
                int i1 = Math.Min(t, i0 + BlockTokens), rows = (i1 - i0) * group, n1 = Math.Min(past + i1, filled);
                // [i1-i0, group*hd] view of the group's columns -> [rows, hd] (one copy of q's block)
                var qb = q.Narrow(0, i0, i1 - i0).Narrow(1, g * group * hd, group * hd).Contiguous().View(rows, hd);
                var probs = Matmul.Forward(qb, kg.Narrow(0, 0, n1).T()).Contiguous(); // scores [rows, n1], then probs in place
                K.RowParallel.For(rows, n1, ComputeSettings.Threads, r =>
                {
                    int i = i0 + r / group, n = Math.Min(past + i + 1, filled);
                    var row = RowScratch(n1);
                    Load(probs, probs.Offset + r * n1, row[..n]);
                    K.Attention.SoftmaxRow(row[..n], scale, dt);
                    row[n..n1].Clear();
                    Store(row[..n1], probs, probs.Offset + r * n1);
                });
                var ob = Matmul.Forward(probs, vg.Narrow(0, 0, n1));             // [rows, hd]
                for (int i = i0; i < i1; i++)                                    // rows of token i: heads g*group.. contiguous
                    output.Narrow(0, i, 1).Narrow(1, g * group * hd, group * hd)
                        .CopyFrom(ob.Narrow(0, (i - i0) * group, group).View(1, group * hd));
            }
        }
    }

    // Prefill with head_dim a multiple of 16: each kv head's keys transposed once to float32 [hd, ldk] (ldk = filled rounded
    // up to 32, zero columns after), then tiles of K.Attention.TileRows query rows of that kv head (row r = i * group + hh:
    // head g*group + hh of token i) through K.Attention.Tile, in parallel over (kv head, tile).
    private static void Tiled(Tensor q, Tensor keys, Tensor values, int past, int filled, float scale, Tensor output,
        int t, int heads, int kv, int hd)
    {
        int group = heads / kv, width = heads * hd, cap = keys.Shape[1], ldk = (filled + 31) / 32 * 32;
        var kt = new float[kv * hd * ldk];
        var krow = new float[hd];
        for (int g = 0; g < kv; g++)
            for (int j = 0; j < filled; j++)
            {
                Load(keys, keys.Offset + (g * cap + j) * hd, krow);
                for (int c = 0; c < hd; c++) kt[(g * hd + c) * ldk + j] = krow[c];
            }
        // bf16 values widened once (exact) so the tiles' inner loop reads float32
        float[]? vf = null;
        if (values.DType == DType.BFloat16)
        {
            vf = new float[kv * filled * hd];
            for (int g = 0; g < kv; g++)
                BFloat16.ToFloat(values.StorageSpan<ushort>().Slice(values.Offset + g * cap * hd, filled * hd), vf.AsSpan(g * filled * hd, filled * hd));
        }
        int rowsPerHead = t * group, tilesPerHead = (rowsPerHead + K.Attention.TileRows - 1) / K.Attention.TileRows;
        int items = kv * tilesPerHead;
        var dt = q.DType;
        K.RowParallel.For(items, K.Attention.TileRows * ldk * hd, ComputeSettings.Threads, item =>
        {
            int g = item / tilesPerHead, r0 = item % tilesPerHead * K.Attention.TileRows;
            int rows = Math.Min(K.Attention.TileRows, rowsPerHead - r0);
            var scratch = RowScratch(2 * K.Attention.TileRows * hd + K.Attention.TileRows * ldk);
            var qt = scratch[..(K.Attention.TileRows * hd)];
            var ot = scratch.Slice(K.Attention.TileRows * hd, K.Attention.TileRows * hd);
            var st = scratch.Slice(2 * K.Attention.TileRows * hd, K.Attention.TileRows * ldk);
            Span<int> n = stackalloc int[K.Attention.TileRows];
            for (int r = 0; r < rows; r++)
            {
                int i = (r0 + r) / group, h = g * group + (r0 + r) % group;
                n[r] = Math.Min(past + i + 1, filled);
                Load(q, q.Offset + i * width + h * hd, qt.Slice(r * hd, hd));
            }
            var ktg = kt.AsSpan(g * hd * ldk, hd * ldk);
            var vg = vf is null ? values.StorageSpan<float>().Slice(values.Offset + g * cap * hd) : vf.AsSpan(g * filled * hd, filled * hd);
            K.Attention.Tile(qt, rows, n, ktg, ldk, vg, hd, scale, dt, st, ot);
            for (int r = 0; r < rows; r++)
            {
                int i = (r0 + r) / group, h = g * group + (r0 + r) % group;
                Store(ot.Slice(r * hd, hd), output, output.Offset + i * width + h * hd);
            }
        });
    }

    [ThreadStatic] private static float[]? _rowScratch;

    private static Span<float> RowScratch(int n) =>
        (_rowScratch is { } a && a.Length >= n ? a : _rowScratch = new float[Math.Max(n, 4096)]).AsSpan(0, n);

    private static void SameDType(Tensor x, DType dt, string name)
    {
        if (x.DType != dt) throw new ArgumentException($"rope_into_cache: {name} is {x.DType.TorchName()}, q is {dt.TorchName()}");
    }

    [ThreadStatic] private static AttentionJob? Job;

    // Work item w = i * heads + h (query row i, head h); task k takes w = k, k + tasks, ... so causal rows of every length
    // are spread evenly. Each item writes its own output slice.
    private sealed class AttentionJob : GemmJob
    {
        private Tensor? _q, _k, _v, _out;
        private int _past, _filled, _t, _heads, _kv, _hd;
        private float _scale;
        public int Tasks;

        [ThreadStatic] private static float[]? Scratch;

        public void Set(Tensor q, Tensor k, Tensor v, int past, int filled, float scale, Tensor output, int t, int heads, int kv, int hd)
        {
            (_q, _k, _v, _out, _past, _filled, _scale, _t, _heads, _kv, _hd) = (q, k, v, output, past, filled, scale, t, heads, kv, hd);
        }

        public void Clear() => (_q, _k, _v, _out) = (null, null, null, null);

        public override void Execute(int task)
        {
            int hd = _hd, s = _filled, need = 3 * hd + s;
            var scratch = Scratch is { } a && a.Length >= need ? a : Scratch = new float[Math.Max(need, 4096)];
            var qRow = scratch.AsSpan(0, hd);
            var oRow = scratch.AsSpan(hd, hd);
            var scores = scratch.AsSpan(3 * hd, s);
            if (_q!.DType == DType.Float32) Items<float, K.Float32Kv>(task, qRow, oRow, scores);
            else Items<ushort, K.BFloat16Kv>(task, qRow, oRow, scores);
        }

        private void Items<T, TKv>(int task, Span<float> qRow, Span<float> oRow, Span<float> scores)
            where T : unmanaged where TKv : K.IKvElement<T>
        {
            var dt = _q!.DType;
            int hd = _hd, group = _heads / _kv, cap = _k!.Shape[1], width = _heads * hd;
            var qs = _q.StorageSpan<T>().Slice(_q.Offset);
            var os = _out!.StorageSpan<T>().Slice(_out.Offset);
            var ks = _k.StorageSpan<T>().Slice(_k.Offset);
            var vs = _v!.StorageSpan<T>().Slice(_v.Offset);
            long items = (long)_t * _heads;
            for (long w = task; w < items; w += Tasks)
            {
                int i = (int)(w / _heads), h = (int)(w % _heads), g = h / group, n = Math.Min(_past + i + 1, _filled);
                Widen(qs.Slice(i * width + h * hd, hd), qRow);
                K.Attention.Row<T, TKv>(qRow, ks.Slice(g * cap * hd, n * hd), vs.Slice(g * cap * hd, n * hd), n, hd, _scale, dt, scores, oRow);
                Narrow(oRow, os.Slice(i * width + h * hd, hd));
            }
        }
    }

    private static void Widen<T>(ReadOnlySpan<T> src, Span<float> dst) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) MemoryMarshal.Cast<T, float>(src).CopyTo(dst);
        else BFloat16.ToFloat(MemoryMarshal.Cast<T, ushort>(src), dst);
    }

    private static void Narrow<T>(ReadOnlySpan<float> src, Span<T> dst) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) src.CopyTo(MemoryMarshal.Cast<T, float>(dst));
        else BFloat16.FromFloat(src, MemoryMarshal.Cast<T, ushort>(dst));
    }

    // element offset -> float32 row (float32 or bfloat16 storage)
    internal static void Load(Tensor t, int offset, Span<float> dst)
    {
        if (t.DType == DType.Float32) t.StorageSpan<float>().Slice(offset, dst.Length).CopyTo(dst);
        else BFloat16.ToFloat(t.StorageSpan<ushort>().Slice(offset, dst.Length), dst);
    }

    // float32 row -> element offset, rounded once to the tensor's dtype
    internal static void Store(ReadOnlySpan<float> src, Tensor t, int offset)
    {
        if (t.DType == DType.Float32) src.CopyTo(t.StorageSpan<float>().Slice(offset, src.Length));
        else BFloat16.FromFloat(src, t.StorageSpan<ushort>().Slice(offset, src.Length));
    }
}
