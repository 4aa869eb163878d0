namespace Harness.Engine.Tensors;

/// <summary>Where a tensor lives: the host, or a device whose backend allocated its storage (<see cref="ITensorBackend"/>).</summary>
public sealed partial class Tensor
{
    /// <summary>True when the storage is device memory (a CUDA device: the one device backend the engine has).</summary>
    public bool IsCuda => Storage.IsDevice;

    /// <summary>The backend of the place this tensor's bytes live: looked up once per op, never per element.</summary>
    public ITensorBackend Backend => Storage.Device?.Backend ?? HostBackend.Instance;

    /// <summary>"cpu" or "cuda:N", as torch prints tensor.device.</summary>
    public string DeviceName => Backend.Name;

    /// <summary>A zero-filled contiguous tensor where <paramref name="like"/> lives (host or its device).</summary>
    public static Tensor ZerosLike(Tensor like, DType dtype, params int[] shape) => like.Backend.Zeros(dtype, shape);

    /// <summary>A contiguous host copy of a device tensor (this tensor when it is already on the host).</summary>
    public Tensor ToHost() => Backend.ToHost(this);
}
