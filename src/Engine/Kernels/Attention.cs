using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Harness.Engine.Tensors;

namespace Harness.Engine.Kernels;

/// <summary>An element type of the KV cache, widened to float32 as it is read (exact for bf16).</summary>
public interface IKvElement<T> where T : unmanaged
{
    /// <summary>Elements p[0..8) as float32.</summary>
    static abstract Vector256<float> Load8(ref T p);

    static abstract float Load(ref T p);
}

/// <summary>float32 cache elements.</summary>
public readonly struct Float32Kv : IKvElement<float>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ref float p) => Vector256.LoadUnsafe(ref p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(ref float p) => p;
}

/// <summary>bfloat16 cache elements (the bits of the upper half of a float32).</summary>
public readonly struct BFloat16Kv : IKvElement<ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ref ushort p)
    {
        var u = Vector128.LoadUnsafe(ref p);                                               // 8 x bf16
        var w = Vector256.Create(Vector128.WidenLower(u), Vector128.WidenUpper(u));          // 8 x uint32
        return Vector256.ShiftLeft(w, 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(ref ushort p) => BFloat16.ToFloat(p);
}

/// <summary>
/// Causal attention of one query row against one KV head, in HF's eager arithmetic (eager_attention_forward):
/// <code>
/// scores = round(round(q . k_j) * scale)        j = 0..n-1 (the visible keys; later ones are masked, exp(-inf) = 0)
/// p      = round(softmax(scores) in float32)    (max-subtracted, e * (1 / sum), as Softmax.Row in normal mode)
/// out    = sum_j p_j * v_j in float32           (the caller rounds once to the dtype)
/// </code>
/// round() is the rounding to the model dtype (identity for float32). It equals
/// <c>softmax((q @ K^T) * scale + causal_mask, dtype=float32).to(dtype) @ V</c> for one row, with the dot products and
/// the sum over keys in this kernel's order (8-wide FMA over head_dim, four keys at a time; not the batch-invariant order).
/// Shape contract: q and out [hd]; keys and values hold n rows of hd elements, row j at j * hd; scores has room for n.
/// </summary>
public static class Attention
{
    public static void Row<T, TKv>(ReadOnlySpan<float> q, ReadOnlySpan<T> keys, ReadOnlySpan<T> values, int n, int hd,
        float scale, DType dtype, Span<float> scores, Span<float> output)
        where T : unmanaged where TKv : IKvElement<T>
    {
        if (q.Length < hd || output.Length < hd || scores.Length < n || keys.Length < n * hd || values.Length < n * hd)
            throw new ArgumentException($"attention row: hd {hd}, {n} keys: q {q.Length}, out {output.Length}, scores {scores.Length}, keys {keys.Length}, values {values.Length}");
        Scores<T, TKv>(q, keys, n, hd, scores);
        var s = scores[..n];
        Rounding.InPlace(s, dtype);
        SoftmaxRow(s, scale, dtype);
        Weighted<T, TKv>(s, values, n, hd, output);
    }

    /// <summary>
    /// The scores-to-probabilities step of one row, in place: p = round(softmax(round(s * scale)) in float32), s already
    /// rounded to the dtype (the q @ K^T result): <c>softmax(attn_weights * scaling + mask, dtype=float32).to(dtype)</c>
    /// over the visible keys.
    /// </summary>
    public static void SoftmaxRow(Span<float> s, float scale, DType dtype)
    {
        System.Numerics.Tensors.TensorPrimitives.Multiply(s, scale, s);
        Rounding.InPlace(s, dtype);
        Softmax.Row(s, s, invariant: false);
        Rounding.InPlace(s, dtype);
    }

    /// <summary>Rows of one <see cref="Tile{T, TKv}"/>.</summary>
    public const int TileRows = 4;

    /// <summary>
    /// The prefill form of <see cref="Row{T, TKv}"/>: up to <see cref="TileRows"/> query rows against the same KV head at
    /// once, each row r with its own visible count n[r], so every key's columns are loaded once per tile:
    /// <code>
    /// scores[r, j] = q[r] . k_j                 j &lt; max n  (keysT: the keys transposed, [hd, ldk], 32 keys a step)
    /// p[r]         = SoftmaxRow(round(scores[r, :n[r]]), scale)
    /// out[r]       = sum_{j &lt; n[r]} p[r, j] * v_j   (float32; the caller rounds once)
    /// </code>
    /// The same roundings as <see cref="Row{T, TKv}"/>, dot products in order c = 0..hd-1 (one FMA chain per score), the
    /// sum over keys in order j = 0.. (one FMA chain per output element): 16-lane vectors where the CPU has AVX-512 (a lane
    /// is one score or one output element, lanes never mix), else 8-lane ones; the same bits either way.
    /// Shape contract: hd a multiple of 16; q rows at q[r * hd]; keysT [hd, ldk] float32 with ldk a multiple of 32 and
    /// ldk &gt;= max n (columns from n on are read but unused: they must be finite); values (float32) n rows of hd at j * hd;
    /// scores [rows, ldk] scratch; out [rows, hd].
    /// </summary>
    public static void Tile(ReadOnlySpan<float> q, int rows, ReadOnlySpan<int> n, ReadOnlySpan<float> keysT, int ldk,
        ReadOnlySpan<float> values, int hd, float scale, DType dtype, Span<float> scores, Span<float> output)
    {
        int maxN = 0;
        for (int r = 0; r < rows; r++) maxN = Math.Max(maxN, n[r]);
        if (rows < 1 || rows > TileRows || hd % 16 != 0 || ldk % 32 != 0 || ldk < maxN || q.Length < rows * hd || keysT.Length < hd * ldk
            || values.Length < maxN * hd || scores.Length < rows * ldk || output.Length < rows * hd)
            throw new ArgumentException($"attention tile: {rows} rows, hd {hd}, ldk {ldk}, n up to {maxN}");
        if (Vector512.IsHardwareAccelerated) TileScores<Lanes16, Acc16>(q, rows, maxN, keysT, ldk, hd, scores);
        else TileScores<Lanes8, Acc8>(q, rows, maxN, keysT, ldk, hd, scores);
        for (int r = 0; r < rows; r++)
        {
            var s = scores.Slice(r * ldk, n[r]);
            Rounding.InPlace(s, dtype);
            SoftmaxRow(s, scale, dtype);
            scores.Slice(r * ldk + n[r], maxN - n[r]).Clear();               // later keys: probability 0
        }
        if (Vector512.IsHardwareAccelerated && hd % 32 == 0) TileValues<Lanes16, Acc16>(rows, maxN, scores, ldk, values, hd, output);
        else TileValues<Lanes8, Acc8>(rows, maxN, scores, ldk, values, hd, output);
    }

    /// <summary>A vector width for the tile kernel: W float lanes, two vectors (2W keys or columns) a step.</summary>
    private interface ILanes<TAcc> where TAcc : struct
    {
        static abstract int W { get; }
        static abstract void Step(ref float b, float x0, float x1, float x2, float x3, ref TAcc acc);
        static abstract void Store(ref TAcc acc, ref float dst, nint ld, int rows);
    }

    /// <summary>Eight accumulators: rows 0..3 times two vectors.</summary>
    private struct Acc16
    {
        public Vector512<float> A00, A01, A10, A11, A20, A21, A30, A31;
    }

    private struct Acc8
    {
        public Vector256<float> A00, A01, A10, A11, A20, A21, A30, A31;
    }

    private readonly struct Lanes16 : ILanes<Acc16>
    {
        public static int W => 16;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Step(ref float b, float x0, float x1, float x2, float x3, ref Acc16 a)
        {
            var b0 = Vector512.LoadUnsafe(ref b);
            var b1 = Vector512.LoadUnsafe(ref b, 16);
            var v = Vector512.Create(x0); a.A00 = Vector512.FusedMultiplyAdd(v, b0, a.A00); a.A01 = Vector512.FusedMultiplyAdd(v, b1, a.A01);
            v = Vector512.Create(x1); a.A10 = Vector512.FusedMultiplyAdd(v, b0, a.A10); a.A11 = Vector512.FusedMultiplyAdd(v, b1, a.A11);
            v = Vector512.Create(x2); a.A20 = Vector512.FusedMultiplyAdd(v, b0, a.A20); a.A21 = Vector512.FusedMultiplyAdd(v, b1, a.A21);
            v = Vector512.Create(x3); a.A30 = Vector512.FusedMultiplyAdd(v, b0, a.A30); a.A31 = Vector512.FusedMultiplyAdd(v, b1, a.A31);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(ref Acc16 a, ref float d, nint ld, int rows)
        {
            a.A00.StoreUnsafe(ref d); a.A01.StoreUnsafe(ref d, 16);
            if (rows > 1) { a.A10.StoreUnsafe(ref d, (nuint)ld); a.A11.StoreUnsafe(ref d, (nuint)(ld + 16)); }
            if (rows > 2) { a.A20.StoreUnsafe(ref d, (nuint)(2 * ld)); a.A21.StoreUnsafe(ref d, (nuint)(2 * ld + 16)); }
            if (rows > 3) { a.A30.StoreUnsafe(ref d, (nuint)(3 * ld)); a.A31.StoreUnsafe(ref d, (nuint)(3 * ld + 16)); }
        }
    }

    private readonly struct Lanes8 : ILanes<Acc8>
    {
        public static int W => 8;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Step(ref float b, float x0, float x1, float x2, float x3, ref Acc8 a)
        {
            var b0 = Vector256.LoadUnsafe(ref b);
            var b1 = Vector256.LoadUnsafe(ref b, 8);
            var v = Vector256.Create(x0); a.A00 = Vector256.FusedMultiplyAdd(v, b0, a.A00); a.A01 = Vector256.FusedMultiplyAdd(v, b1, a.A01);
            v = Vector256.Create(x1); a.A10 = Vector256.FusedMultiplyAdd(v, b0, a.A10); a.A11 = Vector256.FusedMultiplyAdd(v, b1, a.A11);
            v = Vector256.Create(x2); a.A20 = Vector256.FusedMultiplyAdd(v, b0, a.A20); a.A21 = Vector256.FusedMultiplyAdd(v, b1, a.A21);
            v = Vector256.Create(x3); a.A30 = Vector256.FusedMultiplyAdd(v, b0, a.A30); a.A31 = Vector256.FusedMultiplyAdd(v, b1, a.A31);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(ref Acc8 a, ref float d, nint ld, int rows)
        {
            a.A00.StoreUnsafe(ref d); a.A01.StoreUnsafe(ref d, 8);
            if (rows > 1) { a.A10.StoreUnsafe(ref d, (nuint)ld); a.A11.StoreUnsafe(ref d, (nuint)(ld + 8)); }
            if (rows > 2) { a.A20.StoreUnsafe(ref d, (nuint)(2 * ld)); a.A21.StoreUnsafe(ref d, (nuint)(2 * ld + 8)); }
            if (rows > 3) { a.A30.StoreUnsafe(ref d, (nuint)(3 * ld)); a.A31.StoreUnsafe(ref d, (nuint)(3 * ld + 8)); }
        }
    }

    // scores[r, j..j+2W) = q[r] . k_j.., c ascending; rows beyond `rows` repeat the last one (not stored)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileScores<L, TAcc>(ReadOnlySpan<float> q, int rows, int maxN, ReadOnlySpan<float> keysT, int ldk, int hd, Span<float> scores)
        where L : struct, ILanes<TAcc> where TAcc : struct
    {
        ref float qr = ref MemoryMarshal.GetReference(q);
        ref float kt = ref MemoryMarshal.GetReference(keysT);
        ref float sr = ref MemoryMarshal.GetReference(scores);
        int r1 = Math.Min(1, rows - 1) * hd, r2 = Math.Min(2, rows - 1) * hd, r3 = Math.Min(3, rows - 1) * hd;
        for (int j = 0; j < maxN; j += 2 * L.W)
        {
            var acc = default(TAcc);
            for (int c = 0; c < hd; c++)
                L.Step(ref Unsafe.Add(ref kt, c * ldk + j), Unsafe.Add(ref qr, c), Unsafe.Add(ref qr, r1 + c),
                    Unsafe.Add(ref qr, r2 + c), Unsafe.Add(ref qr, r3 + c), ref acc);
            L.Store(ref acc, ref Unsafe.Add(ref sr, j), ldk, rows);
        }
    }

    // out[r, c..c+2W) = sum_j p[r, j] * v_j[c..], j ascending
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileValues<L, TAcc>(int rows, int maxN, ReadOnlySpan<float> scores, int ldk, ReadOnlySpan<float> values, int hd, Span<float> output)
        where L : struct, ILanes<TAcc> where TAcc : struct
    {
        ref float vr = ref MemoryMarshal.GetReference(values);
        ref float sr = ref MemoryMarshal.GetReference(scores);
        ref float or = ref MemoryMarshal.GetReference(output);
        int p1 = Math.Min(1, rows - 1) * ldk, p2 = Math.Min(2, rows - 1) * ldk, p3 = Math.Min(3, rows - 1) * ldk;
        for (int c = 0; c < hd; c += 2 * L.W)
        {
            var acc = default(TAcc);
            for (int j = 0; j < maxN; j++)
                L.Step(ref Unsafe.Add(ref vr, j * hd + c), Unsafe.Add(ref sr, j), Unsafe.Add(ref sr, p1 + j),
                    Unsafe.Add(ref sr, p2 + j), Unsafe.Add(ref sr, p3 + j), ref acc);
            L.Store(ref acc, ref Unsafe.Add(ref or, c), hd, rows);
        }
    }

    // scores[j] = q . keys[j]
    private static void Scores<T, TKv>(ReadOnlySpan<float> q, ReadOnlySpan<T> keys, int n, int hd, Span<float> scores)
        where T : unmanaged where TKv : IKvElement<T>
    {
        ref float qr = ref MemoryMarshal.GetReference(q);
        ref T kr = ref MemoryMarshal.GetReference(keys);
        int j = 0;
        if (hd % 8 == 0)
        {
            for (; j + 4 <= n; j += 4)
            {
                ref T k0 = ref Unsafe.Add(ref kr, j * hd);
                ref T k1 = ref Unsafe.Add(ref k0, hd);
                ref T k2 = ref Unsafe.Add(ref k1, hd);
                ref T k3 = ref Unsafe.Add(ref k2, hd);
                Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
                for (int c = 0; c < hd; c += 8)
                {
                    var qv = Vector256.LoadUnsafe(ref qr, (nuint)c);
                    a0 = Vector256.FusedMultiplyAdd(qv, TKv.Load8(ref Unsafe.Add(ref k0, c)), a0);
                    a1 = Vector256.FusedMultiplyAdd(qv, TKv.Load8(ref Unsafe.Add(ref k1, c)), a1);
                    a2 = Vector256.FusedMultiplyAdd(qv, TKv.Load8(ref Unsafe.Add(ref k2, c)), a2);
                    a3 = Vector256.FusedMultiplyAdd(qv, TKv.Load8(ref Unsafe.Add(ref k3, c)), a3);
                }
                scores[j] = Vector256.Sum(a0);
                scores[j + 1] = Vector256.Sum(a1);
                scores[j + 2] = Vector256.Sum(a2);
                scores[j + 3] = Vector256.Sum(a3);
            }
            for (; j < n; j++)
            {
                ref T k0 = ref Unsafe.Add(ref kr, j * hd);
                var a0 = Vector256<float>.Zero;
                for (int c = 0; c < hd; c += 8)
                    a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref qr, (nuint)c), TKv.Load8(ref Unsafe.Add(ref k0, c)), a0);
                scores[j] = Vector256.Sum(a0);
            }
            return;
        }
        for (; j < n; j++)
        {
            float acc = 0f;
            for (int c = 0; c < hd; c++) acc = MathF.FusedMultiplyAdd(q[c], TKv.Load(ref Unsafe.Add(ref kr, j * hd + c)), acc);
            scores[j] = acc;
        }
    }

    // output = sum_j p[j] * values[j]
    private static void Weighted<T, TKv>(ReadOnlySpan<float> p, ReadOnlySpan<T> values, int n, int hd, Span<float> output)
        where T : unmanaged where TKv : IKvElement<T>
    {
        var o = output[..hd];
        o.Clear();
        ref float or = ref MemoryMarshal.GetReference(o);
        ref T vr = ref MemoryMarshal.GetReference(values);
        int j = 0;
        if (hd % 8 == 0)
        {
            for (; j + 4 <= n; j += 4)
            {
                ref T v0 = ref Unsafe.Add(ref vr, j * hd);
                ref T v1 = ref Unsafe.Add(ref v0, hd);
                ref T v2 = ref Unsafe.Add(ref v1, hd);
                ref T v3 = ref Unsafe.Add(ref v2, hd);
                var p0 = Vector256.Create(p[j]);
                var p1 = Vector256.Create(p[j + 1]);
                var p2 = Vector256.Create(p[j + 2]);
                var p3 = Vector256.Create(p[j + 3]);
                for (int c = 0; c < hd; c += 8)
                {
                    var acc = Vector256.LoadUnsafe(ref or, (nuint)c);
                    acc = Vector256.FusedMultiplyAdd(p0, TKv.Load8(ref Unsafe.Add(ref v0, c)), acc);
                    acc = Vector256.FusedMultiplyAdd(p1, TKv.Load8(ref Unsafe.Add(ref v1, c)), acc);
                    acc = Vector256.FusedMultiplyAdd(p2, TKv.Load8(ref Unsafe.Add(ref v2, c)), acc);
                    acc = Vector256.FusedMultiplyAdd(p3, TKv.Load8(ref Unsafe.Add(ref v3, c)), acc);
                    acc.StoreUnsafe(ref or, (nuint)c);
                }
            }
            for (; j < n; j++)
            {
                ref T v0 = ref Unsafe.Add(ref vr, j * hd);
                var p0 = Vector256.Create(p[j]);
                for (int c = 0; c < hd; c += 8)
                    Vector256.FusedMultiplyAdd(p0, TKv.Load8(ref Unsafe.Add(ref v0, c)), Vector256.LoadUnsafe(ref or, (nuint)c))
                        .StoreUnsafe(ref or, (nuint)c);
            }
            return;
        }
        for (; j < n; j++)
            for (int c = 0; c < hd; c++) o[c] = MathF.FusedMultiplyAdd(p[j], TKv.Load(ref Unsafe.Add(ref vr, j * hd + c)), o[c]);
    }
}
