namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// A register-tile micro-kernel: C[MR x NR] (row-major, leading dimension ldc) = or += packed A panel x packed B panel.
/// Packed A is MR floats per k (k-major), packed B is NR floats per k. Contract that makes GEMM batch-invariant:
/// every C element is one FMA chain, c = fma(a_k, b_k, c) for k ascending, starting from 0 when
/// <c>accumulate</c> is false and from the float32 value already in C when it is true. Lanes never mix.
/// Implemented as static abstract members so the blocked driver is specialised (and inlined) per kernel.
/// </summary>
internal unsafe interface IGemmMicroKernel
{
    static abstract int MR { get; }
    static abstract int NR { get; }
    static abstract GemmBlocking Blocking { get; }
    static abstract void Run(int kc, float* a, float* b, float* c, nint ldc, bool accumulate);
}
