using Harness.Engine.Tensors;

namespace Harness.Engine.Models;

/// <summary>
/// One layer's key/value cache for one sequence on one rank: keys and values [kv_heads_local, capacity, head_dim];
/// <see cref="Length"/> positions are filled. Prefill appends the prompt's real tokens (never SP padding), decode one
/// token per step.
/// </summary>
/// With a <paramref name="device"/>, the cache lives in device memory (appends are device copies).
public sealed class KvCache(int kvHeads, int headDim, int capacity, DType dtype, Cuda.CudaDevice? device = null)
{
    private readonly Tensor _k = device is null ? Tensor.Zeros(dtype, kvHeads, capacity, headDim) : Cuda.CudaTensors.Zeros(device, dtype, kvHeads, capacity, headDim);
    private readonly Tensor _v = device is null ? Tensor.Zeros(dtype, kvHeads, capacity, headDim) : Cuda.CudaTensors.Zeros(device, dtype, kvHeads, capacity, headDim);

    public int Length { get; private set; }
    public int Capacity => capacity;

    /// <summary>Appends k, v [kv_heads, tokens, head_dim].</summary>
    public void Append(Tensor k, Tensor v)
    {
        int n = k.Shape[1];
        if (Length + n > capacity)
            throw new InvalidOperationException($"KV cache of {capacity} positions cannot take {n} more after {Length}");
        if (DevicePosition is { } pos) Cuda.CudaDecodeOps.AppendAt(_k, _v, k, v, pos); // at the device's position (graph steps)
        else
        {
            _k.Narrow(1, Length, n).CopyFrom(k);
            _v.Narrow(1, Length, n).CopyFrom(v);
        }
        Length += n;
    }

    /// <summary>
    /// When set (a device int32 [1] holding <see cref="Length"/>), appends write at that device position and the attention
    /// reads it, so a CUDA graph of a decode step replays at any position; the host <see cref="Length"/> is bookkeeping.
    /// </summary>
    public Tensor? DevicePosition { get; set; }

    /// <summary>The whole cache, [kv_heads, capacity, head_dim] each (rows from <see cref="Length"/> on are not filled yet):
    /// for kernels that write the next rows in place (<see cref="Ops.Attention.RopeIntoCache"/>, a graph step's
    /// rope_append_at) and read the filled ones.</summary>
    public Tensor Keys => _k;
    public Tensor Values => _v;

    /// <summary>Marks n more rows filled after a kernel wrote them into <see cref="Keys"/>/<see cref="Values"/>.</summary>
    public void Advance(int n)
    {
        if (n < 0 || Length + n > capacity)
            throw new InvalidOperationException($"KV cache of {capacity} positions cannot take {n} more after {Length}");
        Length += n;
    }

    /// <summary>Empties the cache (a new sequence), or rewinds it to <paramref name="length"/> rows; rows are overwritten as they are appended.</summary>
    public void Reset(int length = 0)
    {
        if (length < 0 || length > capacity) throw new ArgumentOutOfRangeException(nameof(length), $"KV cache length {length} outside [0, {capacity}]");
        Length = length;
    }

    /// <summary>The filled part: [kv_heads, Length, head_dim] views.</summary>
    public (Tensor K, Tensor V) Filled => (_k.Narrow(1, 0, Length), _v.Narrow(1, 0, Length));
}
