using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Engine.Ops;

/// <summary>
/// torch.matmul with torch's shape rules, on the engine's GEMM (float32 accumulation, one rounding to the output dtype):
/// <list type="bullet">
/// <item>1D x 1D: dot product, a 0-dim result.</item>
/// <item>2D x 2D: [M, K] x [K, N] -> [M, N].</item>
/// <item>1D x 2D and 2D x 1D: the vector becomes a 1-row / 1-column matrix and that dim is dropped from the result.</item>
/// <item>ND x 1D and ND x 2D (N >= 3): the batch dims of A fold into M: one GEMM, as torch does.</item>
/// <item>1D x ND, 2D x ND and ND x ND: batch dims (all but the last two) broadcast, size-1 dims included:
/// [b1.., M, K] x [b2.., K, N] -> [broadcast(b1, b2).., M, N].</item>
/// </list>
/// Inputs must share a float dtype (float32, bfloat16, float16). Errors read like torch's and name both shapes.
/// In batch-invariant mode every output row has the same bits whatever the batch it is computed in (the GEMM guarantees the
/// per-element order; folding batch dims into M keeps it).
/// </summary>
public static class Matmul
{
    /// <summary>torch.matmul(a, b); <paramref name="options"/> (default: every torch shape) can restrict the accepted shapes.</summary>
    public static Tensor Forward(Tensor a, Tensor b, MatmulOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Rank == 0 || b.Rank == 0)
            throw new ArgumentException(
                $"both arguments to matmul need to be at least 1D, but they are {a.Rank}D and {b.Rank}D");
        if (a.DType != b.DType)
            throw new ArgumentException(
                $"expected m1 and m2 to have the same dtype, but got: {a.DType.TorchName()} != {b.DType.TorchName()}");
        if (!a.DType.IsFloatingPoint())
            throw new NotSupportedException(
                $"matmul on {a.DType.TorchName()} tensors is not supported by the engine (float32, bfloat16 and float16 are)");
        if (options?.PreFixBatchInvariantShapes == true) CheckPreFixBatchInvariantShapes(a, b);

        return (a.Rank, b.Rank) switch
        {
            (1, 1) => Dot(a, b),
            (2, 1) => MatrixVector(a, b),
            (1, 2) => VectorMatrix(a, b),
            (2, 2) => MatrixMatrix(a, b),
            (>= 3, 1) => FoldedMatrixVector(a, b),
            (>= 3, 2) => FoldedMatrixMatrix(a, b),
            _ => Batched(a, b),
        };
    }

    // [K] . [K] -> []
    private static Tensor Dot(Tensor a, Tensor b)
    {
        if (a.Shape[0] != b.Shape[0])
            throw new ArgumentException(
                $"inconsistent tensor size, expected tensor [{a.Shape[0]}] and src [{b.Shape[0]}] to have the same number of elements, but got {a.Shape[0]} and {b.Shape[0]} elements respectively");
        return Mm(a.Unsqueeze(0), b.Unsqueeze(1)).Reshape();
    }

    // [M, K] x [K] -> [M]
    private static Tensor MatrixVector(Tensor a, Tensor b)
    {
        if (a.Shape[1] != b.Shape[0])
            throw new ArgumentException(
                $"size mismatch, got input ({a.Shape[0]}), mat ({a.Shape[0]}x{a.Shape[1]}), vec ({b.Shape[0]})");
        return Mm(a, b.Unsqueeze(1)).Squeeze(1);
    }

    // [K] x [K, N] -> [N]
    private static Tensor VectorMatrix(Tensor a, Tensor b) => MatrixMatrix(a.Unsqueeze(0), b).Squeeze(0);

    // [M, K] x [K, N] -> [M, N]
    private static Tensor MatrixMatrix(Tensor a, Tensor b) => Mm(a, b);

    // [b.., M, K] x [K] -> [b.., M]: batch dims fold into the rows of one matrix-vector product.
    private static Tensor FoldedMatrixVector(Tensor a, Tensor b)
    {
        var outShape = a.ShapeArray[..^1];
        var folded = a.Reshape(-1, a.Shape[^1]); // [b.. * M, K]
        return MatrixVector(folded, b).Reshape(outShape);
    }

    // [b.., M, K] x [K, N] -> [b.., M, N]: batch dims fold into M, one GEMM (torch folds the same way).
    private static Tensor FoldedMatrixMatrix(Tensor a, Tensor b)
    {
        var outShape = a.ShapeArray;
        outShape[^1] = b.Shape[1];
        var folded = a.Reshape(-1, a.Shape[^1]); // [b.. * M, K]
        return Mm(folded, b).Reshape(outShape);
    }

    // [b1.., M, K] x [b2.., K, N] -> [broadcast(b1, b2).., M, N]; a 1D A is a 1-row matrix whose row dim is dropped.
    private static Tensor Batched(Tensor a, Tensor b)
    {
        bool squeezeRow = a.Rank == 1;
        if (squeezeRow) a = a.Unsqueeze(0);
        int m = a.Shape[^2], k = a.Shape[^1], kb = b.Shape[^2], n = b.Shape[^1];
        var batchA = a.ShapeArray[..^2];
        var batchB = b.ShapeArray[..^2];
        var batch = Shape.Broadcast(batchA, batchB);
        if (k != kb)
            throw new ArgumentException(
                $"mat1 and mat2 shapes cannot be multiplied ({m}x{k} and {kb}x{n}) in the batched matmul of {Shape.Format(a.Shape)} and {Shape.Format(b.Shape)}");

        var ea = a.Expand([.. batch, m, k]); // stride 0 on broadcast dims: no copy
        var eb = b.Expand([.. batch, kb, n]);
        var c = OpBackend.Of(a, b).BatchedMm(ea, eb, batch);                  // [batch.., M, N]
        return squeezeRow ? c.Squeeze(-2) : c;
    }

    /// <summary>The host's batched product: one GEMM call over every batch's matrix views, float32, rounded once.</summary>
    internal static Tensor BatchedOnHost(Tensor ea, Tensor eb, int[] batch)
    {
        int m = ea.Shape[^2], n = eb.Shape[^1];
        int count = (int)Shape.NumEl(batch);
        var viewsA = new MatrixView[count];
        var viewsB = new MatrixView[count];
        var index = new int[batch.Length];
        for (int i = 0; i < count; i++)
        {
            viewsA[i] = MatrixAt(ea, index);
            viewsB[i] = MatrixAt(eb, index);
            for (int d = batch.Length - 1; d >= 0; d--)
            {
                if (++index[d] < batch[d]) break;
                index[d] = 0;
            }
        }
        var result = Tensor.Zeros(DType.Float32, [.. batch, m, n]);
        Gemm.MultiplyBatched(viewsA, viewsB, result.Span<float>(), n, m * n);
        return result.To(ea.DType);
    }

    private static MatrixView MatrixAt(Tensor t, int[] batchIndex)
    {
        int offset = t.Offset;
        for (int d = 0; d < batchIndex.Length; d++) offset += batchIndex[d] * t.Strides[d];
        return new MatrixView(t.Storage, t.DType, offset, t.Shape[^2], t.Shape[^1], t.Strides[^2], t.Strides[^1]);
    }

    // [M, K] x [K, N] -> [M, N] in the inputs' dtype.
    private static Tensor Mm(Tensor a, Tensor b)
    {
        if (a.Shape[1] != b.Shape[0])
            throw new ArgumentException(
                $"mat1 and mat2 shapes cannot be multiplied ({a.Shape[0]}x{a.Shape[1]} and {b.Shape[0]}x{b.Shape[1]})");
        return OpBackend.Of(a, b).Mm(a, b);
    }

    /// <summary>The host's [M, K] x [K, N]: the engine's GEMM in float32, rounded once to a's dtype.</summary>
    internal static Tensor MmOnHost(Tensor a, Tensor b)
    {
        int m = a.Shape[0], n = b.Shape[1];
        var result = Tensor.Zeros(DType.Float32, m, n);
        if (m > 0 && n > 0) Gemm.Multiply(MatrixView.Of(a), MatrixView.Of(b), result.Span<float>(), n);
        return result.To(a.DType);
    }

    /// <summary>
    /// The shapes vLLM's batch-invariant matmul accepted before its Gemma4-E2B fix (<see cref="MatmulOptions.PreFixBatchInvariantShapes"/>,
    /// fault <see cref="Faults.MatmulNoNdBroadcast"/>): 2D x 2D, 3D x 3D and 4D x 4D with equal batch dims, 3D x 2D and 2D x 3D.
    /// Anything else is rejected with vLLM's message and both shapes.
    /// </summary>
    private static void CheckPreFixBatchInvariantShapes(Tensor a, Tensor b)
    {
        bool supported = (a.Rank, b.Rank) switch
        {
            (2, 2) or (3, 2) or (2, 3) => true,
            (3, 3) or (4, 4) => a.Shape[..^2].SequenceEqual(b.Shape[..^2]),
            _ => false,
        };
        if (!supported)
            throw new ArgumentException(
                $"matmul_batch_invariant currently only supports 2D x 2D, 3D x 3D, 3D x 2D, 2D x 3D and 4D x 4D with equal batch dims, " +
                $"got shapes {Shape.Format(a.Shape)} and {Shape.Format(b.Shape)} (fault '{Faults.MatmulNoNdBroadcast}' is injected)");
    }
}

/// <summary>
/// How a model's matmuls behave, handed to its constructor (never read from ambient state), so a scenario can build a model
/// on the batch-invariant matmul as vLLM shipped it before a fix.
/// </summary>
public sealed record MatmulOptions
{
    /// <summary>torch.matmul's full shape rules.</summary>
    public static MatmulOptions Default { get; } = new();

    /// <summary>vLLM's batch-invariant matmul before its Gemma4-E2B fix: no ND x ND path (fault matmul-no-nd-broadcast).</summary>
    public static MatmulOptions PreFixBatchInvariant { get; } = new() { PreFixBatchInvariantShapes = true };

    /// <summary>
    /// Accept only 2D x 2D, 3D x 3D, 3D x 2D, 2D x 3D and 4D x 4D with equal batch dims, as vLLM's matmul_batch_invariant
    /// did before its ND x ND path: Gemma4-E2B's audio attention ([B, N, U*W, H] @ [N, H, F]) then fails with a shape error.
    /// </summary>
    public bool PreFixBatchInvariantShapes { get; init; }
}

internal sealed partial class HostOps
{
    public Tensor Mm(Tensor a, Tensor b) => Matmul.MmOnHost(a, b);

    public Tensor BatchedMm(Tensor a, Tensor b, int[] batch) => Matmul.BatchedOnHost(a, b, batch);
}
