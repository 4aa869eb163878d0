using Harness.Engine.Tensors;

namespace Harness.Engine.Ops;

/// <summary>Row statistics in float64 (torch's mean and std of a float32/bf16 row accumulate wide and round once).</summary>
public static class RowStatistics
{
    /// <summary>
    /// mean(x, -1) and std(x, -1, unbiased=False) of every row of x [.., n], each summed in float64 and rounded once to
    /// float32: [.., 1] each, on x's device (the host loop, or one row kernel: CudaOps.MeanStd).
    /// </summary>
    public static (Tensor Mean, Tensor Std) MeanStd(Tensor x) => OpBackend.Of(x).MeanStd(x);
}

internal sealed partial class HostOps
{
    public (Tensor Mean, Tensor Std) MeanStd(Tensor x)
    {
        int n = x.Size(-1), rows = x.NumEl / Math.Max(n, 1);
        var values = x.Contiguous().ToDoubleArray();
        var mean = new float[rows];
        var std = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            double m = 0;
            for (int j = 0; j < n; j++) m += values[r * n + j];
            m /= n;
            double v = 0;
            for (int j = 0; j < n; j++) { double d = values[r * n + j] - m; v += d * d; }
            mean[r] = (float)m;
            std[r] = (float)Math.Sqrt(v / n);
        }
        var shape = x.ShapeArray;
        shape[^1] = 1;
        return (Tensor.FromArray(mean, shape), Tensor.FromArray(std, shape));
    }
}
