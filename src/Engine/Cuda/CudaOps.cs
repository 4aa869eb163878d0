using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// The one driver of the CUDA kernels, one file per kind of kernel (CudaOps.Elementwise, .Rows, .Attention, .Index, .Conv;
/// the decode-step kernels that read the position from the device are <see cref="CudaDecodeOps"/>, the GEMMs
/// <see cref="CudaGemm"/>): each entry checks its arguments once (shapes, dtypes, device), makes the operands the kernel's
/// contract needs, instantiates and caches the kernel source (<see cref="CudaDevice.Function"/>) and launches (every
/// launch checked by <see cref="KernelArgs.Launch"/>). The engine's ops (<c>Ops.*</c>) and the CUDA tensor backend
/// (<see cref="CudaBackend"/>) call these when their inputs are device tensors; nothing here calls back into the ops.
/// </summary>
public static partial class CudaOps
{
    private const int Threads = 256;

    private static (uint, uint, uint) GridFor(CudaDevice d, long n) =>
        ((uint)Math.Max(1, Math.Min((n + Threads - 1) / Threads, (long)d.Multiprocessors * 16)), 1u, 1u);

    private static CudaDevice DeviceOf(string op, params Tensor?[] ts)
    {
        CudaDevice? device = null;
        foreach (var t in ts)
        {
            if (t is null) continue;
            var d = CudaTensors.DeviceOf(t) ?? throw new ArgumentException($"{op}: {t} is on the host while the op runs on CUDA; move it with ToDevice()");
            if (device is not null && d != device) throw new ArgumentException($"{op}: tensors on {device} and {d}");
            device = d;
        }
        return device ?? throw new ArgumentException($"{op}: no device tensor");
    }

    /// <summary>The device of the first device tensor among <paramref name="ts"/>: ops whose host operands (masks, index
    /// lists, 0-dim scalars, small weights) are uploaded to it; activations never leave the device.</summary>
    private static CudaDevice FirstDeviceOf(string op, params Tensor?[] ts) =>
        ts.FirstOrDefault(t => t is { IsCuda: true })?.CudaDevice ?? throw new ArgumentException($"{op}: no device tensor");

    private static string ElemType(DType dtype) => dtype.Size() switch
    {
        1 => "unsigned char", 2 => "unsigned short", 4 => "unsigned int", 8 => "unsigned long long",
        _ => throw new NotSupportedException(dtype.ToString()),
    };

    private static void RequireFloat(Tensor t, string op)
    {
        if (!t.DType.IsFloatingPoint())
            throw new ArgumentException($"{op}: expected a floating-point tensor (float32, bfloat16, float16), got {t.DType.TorchName()} of shape {Shape.Format(t.Shape)}");
    }

    /// <summary>
    /// The error of an op that has no CUDA path, naming the op and the device operands' shapes, rather than a host read
    /// of device memory deep inside the CPU kernel.
    /// </summary>
    public static NotSupportedException NoCudaPath(string op, params Tensor?[] ts)
    {
        var dev = ts.Where(t => t is { IsCuda: true }).Select(t => $"{t!.DType.TorchName()} {Shape.Format(t.Shape)} on {t.DeviceName}");
        return new NotSupportedException($"{op}: no CUDA path for these operands ({string.Join(", ", dev)}); the engine runs this op on the host only");
    }
}
