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
    /// scores[r, j] = q[r] . k_j                 j &lt; max n  (keysT: the keys transposed, [hd, ldk], 16 keys a step)
    /// p[r]         = SoftmaxRow(round(scores[r, :n[r]]), scale)
    /// out[r]       = sum_{j &lt; n[r]} p[r, j] * v_j   (float32; the caller rounds once)
    /// </code>
    /// The same roundings as <see cref="Row{T, TKv}"/>, dot products in order c = 0..hd-1 (one FMA chain per score).
    /// Shape contract: hd a multiple of 16; q rows at q[r * hd]; keysT [hd, ldk] float32 with ldk a multiple of 16 and
    /// ldk &gt;= max n (columns from n on are read but unused: they must be finite); values n rows of hd at j * hd;
    /// scores [rows, ldk] scratch; out [rows, hd].
    /// </summary>
    public static void Tile<T, TKv>(ReadOnlySpan<float> q, int rows, ReadOnlySpan<int> n, ReadOnlySpan<float> keysT, int ldk,
        ReadOnlySpan<T> values, int hd, float scale, DType dtype, Span<float> scores, Span<float> output)
        where T : unmanaged where TKv : IKvElement<T>
    {
        int maxN = 0;
        for (int r = 0; r < rows; r++) maxN = Math.Max(maxN, n[r]);
        if (rows < 1 || rows > TileRows || hd % 16 != 0 || ldk % 16 != 0 || ldk < maxN || q.Length < rows * hd || keysT.Length < hd * ldk
            || values.Length < maxN * hd || scores.Length < rows * ldk || output.Length < rows * hd)
            throw new ArgumentException($"attention tile: {rows} rows, hd {hd}, ldk {ldk}, n up to {maxN}");
        ref float qr = ref MemoryMarshal.GetReference(q);
        ref float kt = ref MemoryMarshal.GetReference(keysT);
        ref float sr = ref MemoryMarshal.GetReference(scores);
        // rows beyond `rows` repeat the last one (their results are not stored)
        int r1 = Math.Min(1, rows - 1) * hd, r2 = Math.Min(2, rows - 1) * hd, r3 = Math.Min(3, rows - 1) * hd;
        for (int j = 0; j < maxN; j += 16)
        {
            Vector256<float> a00 = Vector256<float>.Zero, a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int c = 0; c < hd; c++)
            {
                ref float kc = ref Unsafe.Add(ref kt, c * ldk + j);
                var k0 = Vector256.LoadUnsafe(ref kc);
                var k1 = Vector256.LoadUnsafe(ref kc, 8);
                var q0 = Vector256.Create(Unsafe.Add(ref qr, c));
                var q1 = Vector256.Create(Unsafe.Add(ref qr, r1 + c));
                var q2 = Vector256.Create(Unsafe.Add(ref qr, r2 + c));
                var q3 = Vector256.Create(Unsafe.Add(ref qr, r3 + c));
                a00 = Vector256.FusedMultiplyAdd(q0, k0, a00); a01 = Vector256.FusedMultiplyAdd(q0, k1, a01);
                a10 = Vector256.FusedMultiplyAdd(q1, k0, a10); a11 = Vector256.FusedMultiplyAdd(q1, k1, a11);
                a20 = Vector256.FusedMultiplyAdd(q2, k0, a20); a21 = Vector256.FusedMultiplyAdd(q2, k1, a21);
                a30 = Vector256.FusedMultiplyAdd(q3, k0, a30); a31 = Vector256.FusedMultiplyAdd(q3, k1, a31);
            }
            a00.StoreUnsafe(ref sr, (nuint)j); a01.StoreUnsafe(ref sr, (nuint)(j + 8));
            if (rows > 1) { a10.StoreUnsafe(ref sr, (nuint)(ldk + j)); a11.StoreUnsafe(ref sr, (nuint)(ldk + j + 8)); }
            if (rows > 2) { a20.StoreUnsafe(ref sr, (nuint)(2 * ldk + j)); a21.StoreUnsafe(ref sr, (nuint)(2 * ldk + j + 8)); }
            if (rows > 3) { a30.StoreUnsafe(ref sr, (nuint)(3 * ldk + j)); a31.StoreUnsafe(ref sr, (nuint)(3 * ldk + j + 8)); }
        }
        for (int r = 0; r < rows; r++)
        {
            var s = scores.Slice(r * ldk, n[r]);
            Rounding.InPlace(s, dtype);
            SoftmaxRow(s, scale, dtype);
            scores.Slice(r * ldk + n[r], maxN - n[r]).Clear();               // later keys: probability 0
        }
        // out[r] = p[r] @ V, 16 columns at a time for every row of the tile
        ref T vr = ref MemoryMarshal.GetReference(values);
        ref float or = ref MemoryMarshal.GetReference(output);
        int p1 = Math.Min(1, rows - 1) * ldk, p2 = Math.Min(2, rows - 1) * ldk, p3 = Math.Min(3, rows - 1) * ldk;
        for (int c = 0; c < hd; c += 16)
        {
            Vector256<float> o00 = Vector256<float>.Zero, o01 = o00, o10 = o00, o11 = o00, o20 = o00, o21 = o00, o30 = o00, o31 = o00;
            for (int j = 0; j < maxN; j++)
            {
                ref T vj = ref Unsafe.Add(ref vr, j * hd + c);
                var v0 = TKv.Load8(ref vj);
                var v1 = TKv.Load8(ref Unsafe.Add(ref vj, 8));
                var b0 = Vector256.Create(Unsafe.Add(ref sr, j));
                var b1 = Vector256.Create(Unsafe.Add(ref sr, p1 + j));
                var b2 = Vector256.Create(Unsafe.Add(ref sr, p2 + j));
                var b3 = Vector256.Create(Unsafe.Add(ref sr, p3 + j));
                o00 = Vector256.FusedMultiplyAdd(b0, v0, o00); o01 = Vector256.FusedMultiplyAdd(b0, v1, o01);
                o10 = Vector256.FusedMultiplyAdd(b1, v0, o10); o11 = Vector256.FusedMultiplyAdd(b1, v1, o11);
                o20 = Vector256.FusedMultiplyAdd(b2, v0, o20); o21 = Vector256.FusedMultiplyAdd(b2, v1, o21);
                o30 = Vector256.FusedMultiplyAdd(b3, v0, o30); o31 = Vector256.FusedMultiplyAdd(b3, v1, o31);
            }
            o00.StoreUnsafe(ref or, (nuint)c); o01.StoreUnsafe(ref or, (nuint)(c + 8));
            if (rows > 1) { o10.StoreUnsafe(ref or, (nuint)(hd + c)); o11.StoreUnsafe(ref or, (nuint)(hd + c + 8)); }
            if (rows > 2) { o20.StoreUnsafe(ref or, (nuint)(2 * hd + c)); o21.StoreUnsafe(ref or, (nuint)(2 * hd + c + 8)); }
            if (rows > 3) { o30.StoreUnsafe(ref or, (nuint)(3 * hd + c)); o31.StoreUnsafe(ref or, (nuint)(3 * hd + c + 8)); }
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
