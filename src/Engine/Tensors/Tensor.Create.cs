using System.Runtime.InteropServices;

namespace Harness.Engine.Tensors;

public sealed partial class Tensor
{
    /// <summary>A zero-filled contiguous tensor.</summary>
    public static Tensor Zeros(DType dtype, params int[] shape)
    {
        long n = Tensors.Shape.NumEl(shape);
        return new Tensor(Storage.Allocate(n * dtype.Size()), dtype, (int[])shape.Clone());
    }

    public static Tensor Full(DType dtype, double value, params int[] shape)
    {
        var t = Zeros(dtype, shape);
        t.Fill(value);
        return t;
    }

    public static Tensor FromArray(float[] data, params int[] shape) => FromSpan<float>(data, DType.Float32, shape);
    public static Tensor FromArray(long[] data, params int[] shape) => FromSpan<long>(data, DType.Int64, shape);
    public static Tensor FromArray(int[] data, params int[] shape) => FromSpan<int>(data, DType.Int32, shape);
    public static Tensor FromArray(bool[] data, params int[] shape) => FromSpan<bool>(data, DType.Bool, shape);
    public static Tensor FromArray(Half[] data, params int[] shape) => FromSpan<Half>(data, DType.Float16, shape);
    public static Tensor FromArray(double[] data, params int[] shape) => FromSpan<double>(data, DType.Float64, shape);

    /// <summary>A bfloat16 tensor from raw bit patterns.</summary>
    public static Tensor FromBFloat16Bits(ushort[] bits, params int[] shape) => FromSpan<ushort>(bits, DType.BFloat16, shape);

    /// <summary>A 1D tensor shaped as its data when no shape is given.</summary>
    public static Tensor FromSpan<T>(ReadOnlySpan<T> data, DType dtype, params int[] shape) where T : unmanaged
    {
        if (shape.Length == 0 && data.Length != 1) shape = [data.Length];
        if (Tensors.Shape.NumEl(shape) != data.Length)
            throw new ArgumentException($"{data.Length} values cannot fill shape {Tensors.Shape.Format(shape)}");
        var t = Zeros(dtype, shape);
        MemoryMarshal.AsBytes(data).CopyTo(t.Storage.Bytes);
        return t;
    }

    /// <summary>A 0-dim tensor.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.Float32)
    {
        var t = Zeros(dtype);
        t.Fill(value);
        return t;
    }

    /// <summary>0, 1, ..., n-1 as int64 (torch.arange's default).</summary>
    public static Tensor Arange(int n, DType dtype = DType.Int64)
    {
        var t = Zeros(dtype, n);
        for (int i = 0; i < n; i++) t.WriteFromDouble(i, i);
        return t;
    }

    /// <summary>Seeded uniform values in [low, high), rounded to the dtype; the same seed gives the same tensor on every machine.</summary>
    public static Tensor Uniform(DType dtype, ulong seed, float low, float high, params int[] shape)
    {
        var rng = new SplitMix64(seed);
        var t = Zeros(dtype, shape);
        int n = t.NumEl;
        for (int i = 0; i < n; i++) t.WriteFromDouble(i, low + (high - low) * rng.NextFloat());
        return t;
    }

    /// <summary>Seeded standard-normal values (Box-Muller), scaled by std, rounded to the dtype.</summary>
    public static Tensor Randn(DType dtype, ulong seed, params int[] shape) => Normal(dtype, seed, 0f, 1f, shape);

    public static Tensor Normal(DType dtype, ulong seed, float mean, float std, params int[] shape)
    {
        var rng = new SplitMix64(seed);
        var t = Zeros(dtype, shape);
        int n = t.NumEl;
        for (int i = 0; i < n; i++) t.WriteFromDouble(i, mean + std * rng.NextGaussian());
        return t;
    }

    /// <summary>Fills every element of this view (strided views included).</summary>
    public void Fill(double value)
    {
        foreach (var off in StridedOffsets()) WriteFromDouble(off, value);
    }

    /// <summary>Writes one element, rounding to the dtype (bf16: nearest-even; ints: truncation toward zero).</summary>
    internal void WriteFromDouble(int storageOffset, double value)
    {
        switch (DType)
        {
            case DType.Float32: Storage.As<float>()[storageOffset] = (float)value; break;
            case DType.BFloat16: Storage.As<ushort>()[storageOffset] = BFloat16.FromFloat((float)value); break;
            case DType.Float16: Storage.As<Half>()[storageOffset] = (Half)value; break;
            case DType.Int64: Storage.As<long>()[storageOffset] = (long)value; break;
            case DType.Int32: Storage.As<int>()[storageOffset] = (int)value; break;
            case DType.Bool: Storage.Bytes[storageOffset] = value != 0 ? (byte)1 : (byte)0; break;
            case DType.Float64: Storage.As<double>()[storageOffset] = value; break;
            default: throw new InvalidOperationException(DType.ToString());
        }
    }

    /// <summary>Sets one element by multi-index.</summary>
    public void Set(double value, params int[] index) => WriteFromDouble(OffsetOf(index), value);
}

/// <summary>SplitMix64: a tiny seeded generator whose sequence is fixed by its definition, not by the runtime.</summary>
public sealed class SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 24 random bits.</summary>
    public float NextFloat() => (Next() >> 40) * (1.0f / (1 << 24));

    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, n).</summary>
    public int NextInt(int n) => (int)((Next() >> 33) % (ulong)n);

    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble(), u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}
