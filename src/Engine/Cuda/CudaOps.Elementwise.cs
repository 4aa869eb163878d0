using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>The element-wise drivers: copies (any strides, dtype conversion), unary/binary/gated ops of <see cref="ICudaElementwiseOp"/>, where.</summary>
public static partial class CudaOps
{
    /// <summary>A contiguous device copy of <paramref name="src"/> (any strides) in <paramref name="dtype"/>.</summary>
    public static Tensor Copy(Tensor src, DType dtype)
    {
        var device = DeviceOf("copy", src);
        var dst = CudaTensors.Empty(device, dtype, src.ShapeArray);
        CopyInto(src, dst);
        return dst;
    }

    /// <summary>dst.copy_(src): same shape (src already expanded), dtype converted; either side may be on the host.</summary>
    public static void CopyInto(Tensor src, Tensor dst)
    {
        if (!Shape.SequenceEqual(src.Shape, dst.Shape))
            throw new ArgumentException($"copy: source {Shape.Format(src.Shape)} and destination {Shape.Format(dst.Shape)} differ");
        if (!dst.IsCuda)
        {
            dst.CopyFrom(CudaTensors.Download(src));
            return;
        }
        var device = dst.CudaDevice;
        if (!src.IsCuda) src = CudaTensors.Upload(src, device);
        long n = dst.NumEl;
        if (n == 0) return;
        string name;
        nint f;
        if (src.DType == dst.DType)
        {
            name = "copy_bits";
            var elem = ElemType(src.DType);
            f = device.Function("copy_bits/" + elem, name, () => CudaSource.Prelude + ElementwiseKernels.CopyBits.Replace("ELEM", elem));
        }
        else
        {
            if (!src.DType.IsFloatingPoint() || !dst.DType.IsFloatingPoint())
                throw new NotSupportedException($"CUDA copy converts between float dtypes only ({src.DType.TorchName()} to {dst.DType.TorchName()})");
            name = "copy_convert";
            var (si, di) = (src.DType, dst.DType);
            f = device.Function($"copy_convert/{CudaSource.Token(si)}/{CudaSource.Token(di)}", name, () => CudaSource.Instantiate(ElementwiseKernels.CopyConvert, si, di));
        }
        using var args = new KernelArgs().Ptr(src).Add(TensorDesc.Of(src)).Ptr(dst).Add(TensorDesc.Of(dst)).Add(n);
        args.Launch(device, f, name, GridFor(device, n), (Threads, 1, 1));
    }

    /// <summary>out = OP(x) (s: the scalar of scalar ops), contiguous, in <paramref name="outDType"/> (default: x's).</summary>
    public static Tensor Unary<TOp>(Tensor x, float s = 0f, DType? outDType = null) where TOp : ICudaElementwiseOp
    {
        var device = DeviceOf(TOp.Name, x);
        RequireFloat(x, TOp.Name);
        var y = CudaTensors.Empty(device, outDType ?? x.DType, x.ShapeArray);
        long n = x.NumEl;
        using var args = new KernelArgs().Ptr(x).Add(TensorDesc.Of(x)).Ptr(y).Add(s).Add(n);
        var f = device.Function($"unary_{TOp.Name}/{CudaSource.Token(x.DType)}/{CudaSource.Token(y.DType)}", "unary_" + TOp.Name, () => CudaSource.Instantiate(ElementwiseKernels.Unary.Replace("NAME", TOp.Name).Replace("EXPR", TOp.Expression), x.DType, y.DType));
        args.Launch(device, f, "unary_" + TOp.Name, GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>out = OP(a, b) with torch broadcasting, rounded once to <paramref name="outDType"/>.</summary>
    public static Tensor Binary<TOp>(Tensor a, Tensor b, DType outDType) where TOp : ICudaElementwiseOp
    {
        var device = DeviceOf(TOp.Name, a, b);
        RequireFloat(a, TOp.Name);
        RequireFloat(b, TOp.Name);
        var shape = Shape.Broadcast(a.Shape, b.Shape);
        var ea = a.Expand(shape);
        var eb = b.Expand(shape);
        var y = CudaTensors.Empty(device, outDType, shape);
        long n = y.NumEl;
        using var args = new KernelArgs().Ptr(ea).Add(TensorDesc.Of(ea)).Ptr(eb).Add(TensorDesc.Of(eb)).Ptr(y).Add(n);
        var f = device.Function($"binary_{TOp.Name}/{CudaSource.Token(a.DType)}/{CudaSource.Token(outDType)}/{CudaSource.Token(b.DType)}", "binary_" + TOp.Name, () => CudaSource.Instantiate(ElementwiseKernels.Binary.Replace("NAME", TOp.Name).Replace("EXPR", TOp.Expression), a.DType, outDType, b.DType));
        args.Launch(device, f, "binary_" + TOp.Name, GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>HF's act(gate) * up: the activation rounds to the dtype, the product rounds again. gate and up of one shape.</summary>
    public static Tensor Gated<TOp>(Tensor gate, Tensor up) where TOp : ICudaElementwiseOp
    {
        var device = DeviceOf("gated " + TOp.Name, gate, up);
        if (!Shape.SequenceEqual(gate.Shape, up.Shape) || gate.DType != up.DType)
            throw new ArgumentException($"gated {TOp.Name}: gate {gate} and up {up} must have one shape and dtype");
        var y = CudaTensors.Empty(device, gate.DType, gate.ShapeArray);
        long n = y.NumEl;
        using var args = new KernelArgs().Ptr(gate).Add(TensorDesc.Of(gate)).Ptr(up).Add(TensorDesc.Of(up)).Ptr(y).Add(n);
        var f = device.Function($"gated_{TOp.Name}/{CudaSource.Token(gate.DType)}", "gated_" + TOp.Name, () => CudaSource.Instantiate(ElementwiseKernels.Gated.Replace("NAME", TOp.Name).Replace("EXPR", TOp.Expression), gate.DType));
        args.Launch(device, f, "gated_" + TOp.Name, GridFor(device, n), (Threads, 1, 1));
        return y;
    }

    /// <summary>torch.where(mask, a, b): every operand broadcast to one shape; a and b in <paramref name="dtype"/> (converted first).</summary>
    public static Tensor Where(Tensor mask, Tensor a, Tensor b, DType dtype)
    {
        var device = FirstDeviceOf("where", mask, a, b);
        if (mask.DType != DType.Bool) throw new ArgumentException($"where: the condition must be bool, got {mask.DType.TorchName()}");
        var shape = Shape.Broadcast(Shape.Broadcast(mask.Shape, a.Shape), b.Shape);
        var m = mask.ToDevice(device).Expand(shape);
        var ea = a.ToDevice(device).To(dtype).Expand(shape);
        var eb = b.ToDevice(device).To(dtype).Expand(shape);
        var y = CudaTensors.Empty(device, dtype, shape);
        long n = y.NumEl;
        var elem = ElemType(dtype);
        var f = device.Function("where_select/" + elem, "where_select", () => CudaSource.Prelude + ElementwiseKernels.Where.Replace("ELEM", elem));
        using var args = new KernelArgs().Ptr(m).Add(TensorDesc.Of(m)).Ptr(ea).Add(TensorDesc.Of(ea)).Ptr(eb).Add(TensorDesc.Of(eb)).Ptr(y).Add(n);
        args.Launch(device, f, "where_select", GridFor(device, n), (Threads, 1, 1));
        return y;
    }
}
