using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// One CUDA device's <see cref="ITensorBackend"/>: the copies and gathers a <see cref="Tensor"/> over this device's memory
/// runs, done by the CUDA drivers (<see cref="CudaOps"/>, <see cref="CudaTensors"/>). The tensor reaches it through its
/// storage (<see cref="DeviceMemory.Backend"/>), so the Tensors layer names no CUDA type.
/// </summary>
internal sealed partial class CudaBackend(CudaDevice device) : ITensorBackend
{
    public string Name => device.ToString();

    public Tensor Zeros(DType dtype, int[] shape) => CudaTensors.Zeros(device, dtype, shape);

    public Tensor Copy(Tensor src, DType dtype) => CudaOps.Copy(src, dtype);

    public Tensor CopyToKeep(Tensor src, DType dtype)
    {
        // Inside a capture the copy would become a node of the graph and its memory the graph's: the graph decoder runs
        // one eager step (which makes every kept copy) before it captures, so reaching here while capturing is a bug.
        device.MakeCurrent();
        if (Interop.CudaGraphApi.IsCapturing(device.Stream))
            throw new InvalidOperationException($"a tensor to keep ({src.DType.TorchName()} {Shape.Format(src.Shape)} as {dtype.TorchName()}) was first made inside a CUDA graph capture on {device}; run the step once eagerly before capturing it");
        using (CudaArena.Suspend()) return CudaOps.Copy(src, dtype);
    }

    public void CopyInto(Tensor src, Tensor dst) => CudaOps.CopyInto(src, dst);

    public Tensor ToHost(Tensor t) => CudaTensors.Download(t);

    public Tensor IndexSelect(Tensor x, int dim, long[] ids) => CudaOps.IndexSelect(x, dim, ids);

    public Tensor Gather(Tensor x, int dim, long[] index, int[] indexShape) => CudaOps.Gather(x, dim, index, indexShape);
}
