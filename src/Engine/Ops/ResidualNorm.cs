using Harness.Engine.Tensors;

namespace Harness.Engine.Ops;

/// <summary>
/// vLLM's fused residual add + RMSNorm (Llama's <c>RMSNorm.forward(x, residual)</c>) with its device dispatch in one place:
/// one kernel on a GPU (<see cref="Cuda.CudaOps.AddRmsNorm"/>, the same roundings), one pass over each row on the host
/// (<see cref="Norms.AddRmsNormInto"/>, into buffers the caller may hand in), else the two ops. All three give
/// <c>sum = x + residual</c> (rounded to the dtype) and <c>normed = RMSNorm(sum)</c> (Llama's kind) with the same bits.
/// </summary>
public static class ResidualNorm
{
    /// <summary>A [rows, cols] buffer of a dtype for the normed output (a model's workspace slot), or null: a fresh tensor.</summary>
    public delegate Tensor? Buffer(DType dtype, int rows, int cols);

    /// <summary>sum = x + residual; normed = RMSNorm(sum) (Llama's kind: the weight as is).</summary>
    /// <param name="inPlace">The host pass may overwrite <paramref name="residual"/> with the sum (the caller owns it).</param>
    /// <param name="normedBuffer">Where the host pass writes the normed rows (null: a fresh tensor).</param>
    public static (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor x, Tensor residual, Tensor weight, double eps, bool inPlace = false,
        Buffer? normedBuffer = null)
    {
        if (x.IsCuda && residual.IsCuda && x.DType == residual.DType && Shape.SequenceEqual(x.Shape, residual.Shape))
            return Cuda.CudaOps.AddRmsNorm(x, residual, weight, (float)eps);
        if (!FusesOnHost(x, residual, weight))
        {
            var sum = Elementwise.Add(x, residual);
            return (sum, RmsNorm(sum, weight, eps, normedBuffer));
        }
        var sumOut = inPlace ? residual : Tensor.Zeros(residual.DType, residual.ShapeArray);
        var normed = NormOut(residual, weight, normedBuffer);
        Norms.AddRmsNormInto(x, residual, weight, eps, sumOut, normed);
        return (sumOut, normed);
    }

    /// <summary>RMSNorm(x) (Llama's kind), in one pass into <paramref name="normedBuffer"/> on the host where it applies.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, double eps, Buffer? normedBuffer = null)
    {
        if (!FusesOnHost(x, x, weight)) return Norms.RmsNorm(x, weight, eps, RmsNormKind.Llama);
        var normed = NormOut(x, weight, normedBuffer);
        Norms.AddRmsNormInto(null, x, weight, eps, null, normed);
        return normed;
    }

    // the host pass: float32/bfloat16 rows [rows, hidden] of one dtype, contiguous, and a contiguous weight
    private static bool FusesOnHost(Tensor x, Tensor residual, Tensor weight) =>
        !x.IsCuda && !residual.IsCuda && x.DType == residual.DType && x.DType is DType.Float32 or DType.BFloat16
        && weight.DType is DType.Float32 or DType.BFloat16 && weight.IsContiguous && x.Rank == 2 && x.IsContiguous && residual.IsContiguous
        && Shape.SequenceEqual(x.Shape, residual.Shape);

    // the normed output's dtype is torch's promotion of the input and the weight (float32 when they differ)
    private static Tensor NormOut(Tensor like, Tensor weight, Buffer? buffer)
    {
        var dt = weight.DType != like.DType ? DType.Float32 : like.DType;
        return buffer?.Invoke(dt, like.Shape[0], like.Shape[1]) ?? Tensor.Zeros(dt, like.ShapeArray);
    }
}
