using Harness.Engine.Cuda.Interop;
using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// Row-major GEMM on device tensors: C[b] = A[b] x B[b] with A [M, K], B [K, N], C contiguous [batch, M, N] in the inputs'
/// dtype (fp32/bf16/fp16, fp32 accumulation, one rounding). <c>Ops.Matmul</c> applies torch.matmul's shape rules and
/// calls this for its 2D and batched leaves.
/// <para>Normal mode: cublasGemmStridedBatchedEx with CUBLAS_COMPUTE_32F. A row-major C = A B is the column-major
/// C^T = B^T A^T, so cuBLAS gets (B, A) swapped; a view with unit stride along K is passed transposed, not copied.
/// Batch-invariant mode (<see cref="ComputeSettings.BatchInvariant"/>): <see cref="InvariantGemmKernel"/>, whose bits
/// depend on K alone (cuBLAS picks its algorithm, split-K included, from M).</para>
/// </summary>
public static class CudaGemm
{
    /// <summary>
    /// Batched product of views a [batch.., M, K] and b [batch.., K, N] whose batch dims are already broadcast to one shape.
    /// </summary>
    public static Tensor Multiply(Tensor a, Tensor b, bool? invariant = null)
    {
        var (device, batch, count, m, n, k) = Prepare(ref a, ref b);
        var c = CudaTensors.Empty(device, a.DType, [.. batch, m, n]);
        if (m == 0 || n == 0 || count == 0) return c;
        if (k == 0) { CudaRuntime.MemsetAsync(CudaTensors.Address(c), 0, (long)c.NumEl * c.DType.Size(), device.Stream); return c; }
        switch (Choose(a, b, count, m, n, k, invariant ?? ComputeSettings.BatchInvariant))
        {
            case "invariant": Invariant(device, a, b, c, count, m, n, k); break;
            case "gemv": Gemv(device, a, b, c, m, n, k); break;
            default: Blas(device, a, b, c, count, m, n, k); break;
        }
        return c;
    }

    /// <summary>
    /// The implementation <see cref="Multiply"/> runs for these operands: "invariant" (batch-invariant mode), "gemv" (M &lt;= 8
    /// against a K-contiguous weight that fits <see cref="GemvKernel"/>'s contract), "cublas", or "none" (an empty product).
    /// The one choice Multiply dispatches on (tests and check-gpu ask it; no call records which path it took).
    /// </summary>
    public static string PathFor(Tensor a, Tensor b, bool? invariant = null)
    {
        var (_, _, count, m, n, k) = Prepare(ref a, ref b);
        return m == 0 || n == 0 || count == 0 || k == 0 ? "none" : Choose(a, b, count, m, n, k, invariant ?? ComputeSettings.BatchInvariant);
    }

    private static string Choose(Tensor a, Tensor b, int count, int m, int n, int k, bool invariant) =>
        invariant ? "invariant" : GemvFits(a, b, count, m, k) ? "gemv" : "cublas";

    // The operands checked, their batch dims folded: a [count, M, K], b [count, K, N].
    private static (CudaDevice Device, int[] Batch, int Count, int M, int N, int K) Prepare(ref Tensor a, ref Tensor b)
    {
        var device = a.CudaDevice;
        if (b.CudaDevice != device) throw new ArgumentException($"matmul: operands on {device} and {b.CudaDevice}");
        if (a.DType != b.DType) throw new ArgumentException($"expected m1 and m2 to have the same dtype, but got: {a.DType.TorchName()} != {b.DType.TorchName()}");
        int m = a.Shape[^2], k = a.Shape[^1], n = b.Shape[^1];
        if (b.Shape[^2] != k) throw new ArgumentException($"mat1 and mat2 shapes cannot be multiplied ({m}x{k} and {b.Shape[^2]}x{n})");
        var batch = a.ShapeArray[..^2];
        if (!Shape.SequenceEqual(batch, b.Shape[..^2])) throw new ArgumentException($"matmul: batch dims {Shape.Format(a.Shape)} vs {Shape.Format(b.Shape)}");
        int count = (int)Shape.NumEl(batch);
        a = FlattenBatch(a, count, m, k);
        b = FlattenBatch(b, count, k, n);
        return (device, batch, count, m, n, k);
    }

    // [count, rows, cols] view whose batch entries sit at one stride (a contiguous copy when the broadcast batch dims do not fold).
    private static Tensor FlattenBatch(Tensor t, int count, int rows, int cols)
    {
        int rank = t.Rank;
        var strides = t.StridesArray;
        long? stride = null;
        bool ok = true;
        if (count > 1)
        {
            // Fold the batch dims (size-1 dims ignored) into one stride: each dim's stride = next stride * next size.
            long expect = -1;
            for (int d = rank - 3; d >= 0; d--)
            {
                if (t.Shape[d] == 1) continue;
                if (expect < 0) { stride = strides[d]; expect = (long)strides[d] * t.Shape[d]; continue; }
                if (strides[d] != expect && !(strides[d] == 0 && stride == 0)) { ok = false; break; }
                expect = (long)strides[d] * t.Shape[d];
            }
        }
        if (!ok) t = t.Contiguous();
        var st = t.StridesArray;
        long bs = 0;
        for (int d = rank - 3; d >= 0; d--) if (t.Shape[d] != 1) { bs = st[d]; break; }
        return new Tensor(t.Storage, t.DType, [count, rows, cols], [(int)bs, st[^2], st[^1]], t.Offset);
    }

    private static void Blas(CudaDevice device, Tensor a, Tensor b, Tensor c, int count, int m, int n, int k)
    {
        // Column-major view: C^T (n x m) = op(B^T) (n x k) * op(A^T) (k x m).
        var (opB, ldb, bMat) = Operand(b, k, n);
        var (opA, lda, aMat) = Operand(a, m, k);
        int type = a.DType switch { DType.Float32 => Cublas.R32F, DType.BFloat16 => Cublas.R16BF, DType.Float16 => Cublas.R16F, _ => throw new NotSupportedException(a.DType.ToString()) };
        Cublas.GemmStridedBatched(device.BlasHandle, opB, opA, n, m, k,
            CudaTensors.Address(bMat), ldb, bMat.Strides[0], CudaTensors.Address(aMat), lda, aMat.Strides[0],
            CudaTensors.Address(c), n, (long)m * n, count, type, type);
    }

    // A row-major [rows, cols] matrix view as a column-major cuBLAS operand of the transposed matrix.
    private static (int Op, int Ld, Tensor View) Operand(Tensor t, int rows, int cols)
    {
        int sr = t.Strides[1], sc = t.Strides[2];
        if ((sc == 1 || cols == 1) && sr >= Math.Max(1, cols)) return (Cublas.OpN, Math.Max(sr, Math.Max(1, cols)), t);
        if (rows == 1 && sc == 1) return (Cublas.OpN, Math.Max(1, cols), t);
        if ((sr == 1 || rows == 1) && sc >= Math.Max(1, rows)) return (Cublas.OpT, Math.Max(sc, Math.Max(1, rows)), t);
        var c = t.Contiguous();
        return (Cublas.OpN, Math.Max(1, cols), c);
    }

    // Decode: M <= 8 rows against a K-contiguous weight (see GemvKernel's contract: 16-byte loads along K).
    private static bool GemvFits(Tensor a, Tensor b, int count, int m, int k)
    {
        int vec = 16 / a.DType.Size();
        return count == 1 && m <= GemvKernel.MaxRows && a.Strides[2] == 1 && b.Strides[1] == 1 && k % vec == 0
               && (m <= 1 || a.Strides[1] % vec == 0) && b.Strides[2] % vec == 0
               && CudaTensors.Address(a) % 16 == 0 && CudaTensors.Address(b) % 16 == 0;
    }

    private static void Gemv(CudaDevice device, Tensor a, Tensor b, Tensor c, int m, int n, int k)
    {
        int es = a.DType.Size(), vec = 16 / es;
        var dt = a.DType;
        var f = device.Function($"gemv/{CudaSource.Token(dt)}", "gemv", () => CudaSource.Instantiate(
            GemvKernel.Source.Replace("ESZ", es.ToString(System.Globalization.CultureInfo.InvariantCulture)).Replace("VEC", vec.ToString(System.Globalization.CultureInfo.InvariantCulture)), dt));
        using var args = new KernelArgs().Ptr(a).Add((long)a.Strides[1]).Ptr(b).Add((long)b.Strides[2]).Ptr(c).Add(m).Add(n).Add(k);
        args.Launch(device, f, "gemv", ((uint)((n + 7) / 8), 1, 1), (256, 1, 1));
    }

    /// <summary>
    /// The indexed expert GEMV (<see cref="GemvKernel.ExpertSource"/>; Ops.IndexedExperts.Gemv's contract, checked there):
    /// x [1 or slots, K] with unit stride along K, stacked [E, N, K] any view with unit stride along K (a gate half, a TP
    /// slice), ids int64 [slots] on the device -> [slots, N] contiguous in x's dtype, one launch, nothing read back.
    /// The 16-byte path (gemv's loop at M = 1, the same bits as <see cref="Multiply"/>'s gemv per slot) when K, the
    /// strides and the bases allow it, else scalar loads.
    /// </summary>
    public static Tensor ExpertGemv(Tensor x, Tensor stacked, Tensor ids)
    {
        var device = x.CudaDevice;
        if (stacked.CudaDevice != device || ids.CudaDevice != device)
            throw new ArgumentException($"expert_gemv: x on {device}, weights on {stacked.CudaDevice}, ids on {ids.CudaDevice}");
        if (x.Strides[1] != 1) x = x.Contiguous();
        if (stacked.Strides[2] != 1) throw new ArgumentException($"expert_gemv: the stacked weights need unit stride along K, got {stacked}");
        var idc = ids.Contiguous();
        int slots = idc.NumEl, experts = stacked.Size(0), n = stacked.Size(1), k = stacked.Size(2);
        long ldx = x.Size(0) == 1 ? 0 : x.Strides[0], lde = stacked.Strides[0], ldb = stacked.Strides[1];
        var y = CudaTensors.Empty(device, x.DType, slots, n);
        if (slots == 0 || n == 0) return y;
        if (k == 0) { CudaRuntime.MemsetAsync(CudaTensors.Address(y), 0, (long)y.NumEl * y.DType.Size(), device.Stream); return y; }
        int es = x.DType.Size(), vec = 16 / es;
        bool vecok = k % vec == 0 && ldx % vec == 0 && ldb % vec == 0 && lde % vec == 0
                     && CudaTensors.Address(x) % 16 == 0 && CudaTensors.Address(stacked) % 16 == 0;
        var dt = x.DType;
        var f = device.Function($"expert_gemv/{CudaSource.Token(dt)}", "expert_gemv", () => CudaSource.Instantiate(
            GemvKernel.ExpertSource.Replace("ESZ", es.ToString(System.Globalization.CultureInfo.InvariantCulture)).Replace("VEC", vec.ToString(System.Globalization.CultureInfo.InvariantCulture)), dt));
        using var args = new KernelArgs().Ptr(x).Add(ldx).Ptr(stacked).Ptr(idc).Add(lde).Add(ldb).Ptr(y).Add(experts).Add(n).Add(k).Add(vecok ? 1 : 0);
        args.Launch(device, f, "expert_gemv", ((uint)((n + 7) / 8), (uint)slots, 1), (256, 1, 1));
        return y;
    }

    private static void Invariant(CudaDevice device, Tensor a, Tensor b, Tensor c, int count, int m, int n, int k)
    {
        var f = device.Function($"gemm_invariant/{CudaSource.Token(a.DType)}/{CudaSource.Token(c.DType)}", "gemm_invariant", () => CudaSource.Instantiate(InvariantGemmKernel.Source, a.DType, c.DType));
        using var args = new KernelArgs()
            .Ptr(a).Add((long)a.Strides[1]).Add((long)a.Strides[2]).Add((long)a.Strides[0])
            .Ptr(b).Add((long)b.Strides[1]).Add((long)b.Strides[2]).Add((long)b.Strides[0])
            .Ptr(c).Add(m).Add(n).Add(k);
        uint gx = (uint)((n + InvariantGemmKernel.Tile - 1) / InvariantGemmKernel.Tile), gy = (uint)((m + InvariantGemmKernel.Tile - 1) / InvariantGemmKernel.Tile);
        args.Launch(device, f, "gemm_invariant", (gx, gy, (uint)count), (256, 1, 1));
    }
}
