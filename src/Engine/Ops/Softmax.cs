using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// softmax / log_softmax over a dim, max-subtracted, float32 accumulation; bf16/fp16 inputs are computed in float32 and
/// rounded once (torch's CPU result). Arithmetic: see <see cref="K.Softmax"/>. Rows run in parallel in normal mode.
/// </summary>
public static class Softmax
{
    public static Tensor Forward(Tensor x, int dim = -1) => Run(x, dim, log: false);

    public static Tensor LogSoftmax(Tensor x, int dim = -1) => Run(x, dim, log: true);

    private static Tensor Run(Tensor x, int dim, bool log)
    {
        OpSupport.RequireFloat(x, log ? "log_softmax" : "softmax");
        if (x.Rank == 0) return Run(OpSupport.As1D(x), 0, log).Reshape();
        int d = Shape.WrapDim(dim, x.Rank);
        var moved = d == x.Rank - 1 ? x : x.Transpose(d, -1);
        var result = OpBackend.Of(x).Softmax(moved, log, x.DType, lastDim: d == x.Rank - 1);
        return d == x.Rank - 1 ? result : result.Transpose(d, -1).Contiguous();
    }
}

internal sealed partial class HostOps
{
    public Tensor Softmax(Tensor rows, bool log, DType dtype, bool lastDim) =>
        Ops.RowWise.Apply(rows, dtype, (row, y, invariant) =>
        {
            if (log) K.Softmax.LogRow(row, y, invariant, lastDim ? dtype : DType.Float32); // torch rounds the sum only in its last-dim kernel
            else K.Softmax.Row(row, y, invariant);
        });

    public Tensor RowWise(Tensor x, DType outDType, Ops.RowWise.RowKernel kernel)
    {
        var f = OpSupport.Float32Contiguous(x);
        var y = Tensor.Zeros(DType.Float32, x.ShapeArray);
        int n = x.Rank == 0 ? 1 : x.Size(-1);
        int rows = n == 0 ? 0 : f.NumEl / n;
        bool invariant = ComputeSettings.BatchInvariant;
        K.RowParallel.For(rows, n, ComputeSettings.Threads, r =>
            kernel(f.Span<float>().Slice(r * n, n), y.Span<float>().Slice(r * n, n), invariant));
        return OpSupport.FromFloat32(y, outDType);
    }
}

/// <summary>Runs a float32 row kernel over the last dim of any tensor, in parallel across rows, rounding once to a dtype.</summary>
internal static class RowWise
{
    public delegate void RowKernel(ReadOnlySpan<float> x, Span<float> y, bool invariant);

    public static Tensor Apply(Tensor x, DType outDType, RowKernel kernel) => OpBackend.Of(x).RowWise(x, outDType, kernel);
}
