using Harness.Engine.Tensors;

namespace Harness.Engine.Ops;

/// <summary>
/// vLLM's fused residual add + RMSNorm (Llama's <c>RMSNorm.forward(x, residual)</c>), the fused pass from the operands'
/// backend (<see cref="IOpBackend.AddRmsNorm"/>): one kernel on a GPU (CudaOps.AddRmsNorm, the same roundings), one pass over each row on the host
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
        if (OpBackend.Of(x, residual).AddRmsNorm(x, residual, weight, eps, inPlace, normedBuffer) is { } fused) return fused;
        var sum = Elementwise.Add(x, residual);
        return (sum, RmsNorm(sum, weight, eps, normedBuffer));
    }

    /// <summary>RMSNorm(x) (Llama's kind), in one pass into <paramref name="normedBuffer"/> on the host where it applies.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, double eps, Buffer? normedBuffer = null)
    {
        return OpBackend.Of(x).RmsNormInto(x, weight, eps, normedBuffer) ?? Norms.RmsNorm(x, weight, eps, RmsNormKind.Llama);
    }

    // the host pass (host operands): float32/bfloat16 rows [rows, hidden] of one dtype, contiguous, and a contiguous weight
    internal static bool FusesOnHost(Tensor x, Tensor residual, Tensor weight) =>
        x.DType == residual.DType && x.DType is DType.Float32 or DType.BFloat16
        && weight.DType is DType.Float32 or DType.BFloat16 && weight.IsContiguous && x.Rank == 2 && x.IsContiguous && residual.IsContiguous
        && Shape.SequenceEqual(x.Shape, residual.Shape);

    // the normed output's dtype is torch's promotion of the input and the weight (float32 when they differ)
    internal static Tensor NormOut(Tensor like, Tensor weight, Buffer? buffer)
    {
        var dt = weight.DType != like.DType ? DType.Float32 : like.DType;
        return buffer?.Invoke(dt, like.Shape[0], like.Shape[1]) ?? Tensor.Zeros(dt, like.ShapeArray);
    }
}

internal sealed partial class HostOps
{
    public (Tensor Sum, Tensor Normed)? AddRmsNorm(Tensor x, Tensor residual, Tensor weight, double eps, bool inPlace, ResidualNorm.Buffer? normedBuffer)
    {
        if (!ResidualNorm.FusesOnHost(x, residual, weight)) return null;
        var sumOut = inPlace ? residual : Tensor.Zeros(residual.DType, residual.ShapeArray);
        var normed = ResidualNorm.NormOut(residual, weight, normedBuffer);
        Norms.AddRmsNormInto(x, residual, weight, eps, sumOut, normed);
        return (sumOut, normed);
    }

    public Tensor? RmsNormInto(Tensor x, Tensor weight, double eps, ResidualNorm.Buffer? normedBuffer)
    {
        if (!ResidualNorm.FusesOnHost(x, x, weight)) return null;
        var normed = ResidualNorm.NormOut(x, weight, normedBuffer);
        Norms.AddRmsNormInto(null, x, weight, eps, null, normed);
        return normed;
    }
}
