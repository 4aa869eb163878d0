using System.Runtime.InteropServices;

namespace Harness.Engine.Cuda.Interop;

/// <summary>
/// libcublas: handles and cublasGemmStridedBatchedEx (column-major; <see cref="CudaGemm"/> maps row-major tensors onto it).
/// Every call is checked; the error names the call and cublasGetStatusString's text.
/// </summary>
public static unsafe class Cublas
{
    private const string Lib = CudaLibraries.Blas;

    public const int OpN = 0;
    public const int OpT = 1;

    // cudaDataType_t
    public const int R32F = 0;
    public const int R16F = 2;
    public const int R16BF = 14;

    // cublasComputeType_t: CUBLAS_COMPUTE_32F (no TF32 or reduced-precision shortcuts, as torch.matmul's defaults).
    public const int Compute32F = 68;
    // cublasGemmAlgo_t: CUBLAS_GEMM_DEFAULT
    public const int GemmDefault = -1;
    // cublasMath_t: CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION
    public const int MathDefaultNoReducedReduction = 16;

    [DllImport(Lib)] private static extern int cublasCreate_v2(nint* handle);
    [DllImport(Lib)] private static extern int cublasDestroy_v2(nint handle);
    [DllImport(Lib)] private static extern int cublasSetStream_v2(nint handle, nint stream);
    [DllImport(Lib)] private static extern int cublasSetMathMode(nint handle, int mode);
    [DllImport(Lib)] private static extern int cublasGetVersion_v2(nint handle, int* version);
    [DllImport(Lib)] private static extern nint cublasGetStatusString(int status);
    [DllImport(Lib)] private static extern nint cublasGetStatusName(int status);
    [DllImport(Lib)]
    private static extern int cublasGemmStridedBatchedEx(nint handle, int transa, int transb, int m, int n, int k,
        void* alpha, nint a, int aType, int lda, long strideA, nint b, int bType, int ldb, long strideB,
        void* beta, nint c, int cType, int ldc, long strideC, int batchCount, int computeType, int algo);

    public static void Check(int rc, string call)
    {
        if (rc != 0)
            throw new CudaException(call, rc, Marshal.PtrToStringAnsi(cublasGetStatusName(rc)) ?? "CUBLAS_STATUS_?", Marshal.PtrToStringAnsi(cublasGetStatusString(rc)) ?? "?");
    }

    public static nint Create(nint stream)
    {
        nint h;
        Check(cublasCreate_v2(&h), "cublasCreate_v2");
        Check(cublasSetStream_v2(h, stream), "cublasSetStream_v2");
        Check(cublasSetMathMode(h, MathDefaultNoReducedReduction), "cublasSetMathMode");
        return h;
    }

    public static int Version(nint handle) { int v; Check(cublasGetVersion_v2(handle, &v), "cublasGetVersion_v2"); return v; }

    public static void Destroy(nint handle) => Check(cublasDestroy_v2(handle), "cublasDestroy_v2");

    /// <summary>C = A op B (column-major, alpha 1, beta 0, fp32 accumulation), batchCount products at the given strides.</summary>
    public static void GemmStridedBatched(nint handle, int transa, int transb, int m, int n, int k,
        nint a, int lda, long strideA, nint b, int ldb, long strideB, nint c, int ldc, long strideC, int batch, int dataType, int cType)
    {
        float alpha = 1f, beta = 0f;
        Check(cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, &alpha, a, dataType, lda, strideA, b, dataType, ldb, strideB,
                &beta, c, cType, ldc, strideC, batch, Compute32F, GemmDefault),
            $"cublasGemmStridedBatchedEx(m={m}, n={n}, k={k}, lda={lda}, ldb={ldb}, ldc={ldc}, batch={batch}, type={dataType})");
    }
}
