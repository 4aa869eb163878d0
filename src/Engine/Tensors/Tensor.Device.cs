using Harness.Engine.Cuda;

namespace Harness.Engine.Tensors;

/// <summary>Where a tensor lives: the host, or a CUDA device (see <see cref="CudaTensors"/>).</summary>
public sealed partial class Tensor
{
    /// <summary>True when the storage is device memory.</summary>
    public bool IsCuda => Storage.IsDevice;

    /// <summary>"cpu" or "cuda:N", as torch prints tensor.device.</summary>
    public string DeviceName => Storage.Device is { } d ? d.Device.ToString() : "cpu";

    /// <summary>The device of a device tensor (throws for a host tensor).</summary>
    public CudaDevice CudaDevice => Storage.Device?.Device ?? throw new InvalidOperationException($"{this} is on the host, not on a CUDA device");

    /// <summary>A zero-filled contiguous tensor where <paramref name="like"/> lives (host or its device).</summary>
    public static Tensor ZerosLike(Tensor like, DType dtype, params int[] shape) =>
        like.IsCuda ? CudaTensors.Zeros(like.CudaDevice, dtype, shape) : Zeros(dtype, shape);

    /// <summary>A contiguous copy on <paramref name="device"/> (this tensor when it is already there).</summary>
    public Tensor ToDevice(CudaDevice device) =>
        Storage.Device?.Device == device ? this : CudaTensors.Upload(IsCuda ? ToHost() : this, device);

    /// <summary>A contiguous host copy of a device tensor (this tensor when it is already on the host).</summary>
    public Tensor ToHost() => IsCuda ? CudaTensors.Download(this) : this;
}
