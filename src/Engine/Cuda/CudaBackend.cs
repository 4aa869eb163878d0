using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// One CUDA device's <see cref="ITensorBackend"/>: the copies and gathers a <see cref="Tensor"/> over this device's memory
/// runs, done by the CUDA drivers (<see cref="CudaOps"/>, <see cref="CudaTensors"/>). The tensor reaches it through its
/// storage (<see cref="DeviceMemory.Backend"/>), so the Tensors layer names no CUDA type.
/// </summary>
internal sealed class CudaBackend(CudaDevice device) : ITensorBackend
{
    public string Name => device.ToString();

    public Tensor Zeros(DType dtype, int[] shape) => CudaTensors.Zeros(device, dtype, shape);

    public Tensor Copy(Tensor src, DType dtype) => CudaOps.Copy(src, dtype);

    public Tensor CopyToKeep(Tensor src, DType dtype)
    {
        using (CudaArena.Suspend()) return CudaOps.Copy(src, dtype);
    }

    public void CopyInto(Tensor src, Tensor dst) => CudaOps.CopyInto(src, dst);

    public Tensor ToHost(Tensor t) => CudaTensors.Download(t);

    public Tensor IndexSelect(Tensor x, int dim, long[] ids) => CudaOps.IndexSelect(x, dim, ids);

    public Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape) => CudaOps.Gather(x, dim, index, indexShape);
}
