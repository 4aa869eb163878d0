using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>torch.topk(x, k, dim=-1, largest=True, sorted=True).</summary>
public static class TopK
{
    /// <summary>
    /// The k largest values along the last dim, sorted descending, with int64 indices; equal values keep the lower index
    /// first; NaN ranks above every number. Values keep x's dtype (they are elements of x, so no rounding).
    /// </summary>
    public static (Tensor Values, Tensor Indices) Forward(Tensor x, int k)
    {
        OpSupport.RequireFloat(x, "topk");
        var src = OpSupport.As1D(x);
        int n = src.Size(-1);
        if (k < 0 || k > n)
            throw new ArgumentOutOfRangeException(nameof(k), $"topk: selected index k={k} out of range for last dim of size {n} (shape {Shape.Format(x.Shape)})");
        var (values, indices) = OpBackend.Of(x).TopK(src, k, x.DType);
        return x.Rank == 0 ? (values.Reshape(), indices.Reshape()) : (values, indices);
    }
}

internal sealed partial class HostOps
{
    public (Tensor Values, Tensor Indices) TopK(Tensor src, int k, DType dtype)
    {
        int n = src.Size(-1);
        var f = OpSupport.Float32Contiguous(src);
        var shape = src.ShapeArray;
        shape[^1] = k;
        var values = Tensor.Zeros(DType.Float32, shape);
        var indices = Tensor.Zeros(DType.Int64, shape);
        int rows = n == 0 ? 0 : f.NumEl / n;
        K.RowParallel.For(rows, n, Runtime.ComputeSettings.Threads, r =>
            K.TopK.Row(f.Span<float>().Slice(r * n, n), k, values.Span<float>().Slice(r * k, k), indices.Span<long>().Slice(r * k, k)));
        return (OpSupport.FromFloat32(values, dtype), indices);
    }
}
