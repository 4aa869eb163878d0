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
