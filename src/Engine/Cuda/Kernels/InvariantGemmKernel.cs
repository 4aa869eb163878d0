namespace Harness.Engine.Cuda.Kernels;

/// <summary>
/// The batch-invariant GEMM: C[b] = A[b] x B[b], A [M, K] and B [K, N] with any strides (element offsets per batch entry
/// given by batch strides), C contiguous [batch, M, N] in TOUT.
/// <para>Naive computation it equals, bit for bit: <c>acc = 0; for k in 0..K-1: acc = fmaf(float(A[i,k]), float(B[k,j]), acc);
/// C[i,j] = round_TOUT(acc)</c>. One FMA chain per element in ascending k: no split-K, no tile-size choice that depends on
/// M, N or the batch, so a row's bits depend on K alone. The CPU engine's blocked and GEMV-chain paths run the same chain,
/// so the two devices agree bit for bit (checked by the GPU tests).</para>
/// <para>Tiling (64x64 output tile, K in steps of 16 through shared memory, 256 threads of 4x4 outputs each) only decides
/// who computes an element and when operands arrive, never the order of its additions.</para>
/// </summary>
public static class InvariantGemmKernel
{
    public const int Tile = 64;
    public const int KStep = 16;

    public const string Source = """
        extern "C" __global__ void __launch_bounds__(256) gemm_invariant(
            const void* A, long long sam, long long sak, long long sab,
            const void* B, long long sbk, long long sbn, long long sbb,
            void* C, int M, int N, int K) {
          __shared__ float As[16][64 + 1];
          __shared__ float Bs[16][64 + 1];
          const long long ab = (long long)blockIdx.z * sab, bb = (long long)blockIdx.z * sbb;
          const long long cb = (long long)blockIdx.z * M * (long long)N;
          const int row0 = blockIdx.y * 64, col0 = blockIdx.x * 64;
          const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
          float acc[4][4];
          #pragma unroll
          for (int a = 0; a < 4; ++a)
            #pragma unroll
            for (int b = 0; b < 4; ++b) acc[a][b] = 0.0f;
          for (int k0 = 0; k0 < K; k0 += 16) {
            for (int e = threadIdx.x; e < 16 * 64; e += 256) {
              int kk = e / 64, mm = e % 64;
              int r = row0 + mm, kq = k0 + kk;
              As[kk][mm] = (r < M && kq < K) ? ld_TIN(A, ab + r * sam + kq * sak) : 0.0f;
              int c = col0 + mm;
              Bs[kk][mm] = (c < N && kq < K) ? ld_TIN(B, bb + kq * sbk + c * sbn) : 0.0f;
            }
            __syncthreads();
            int kmax = min(16, K - k0);
            for (int kk = 0; kk < kmax; ++kk) {
              float av[4], bv[4];
              #pragma unroll
              for (int a = 0; a < 4; ++a) av[a] = As[kk][ty + 16 * a];
              #pragma unroll
              for (int b = 0; b < 4; ++b) bv[b] = Bs[kk][tx + 16 * b];
              #pragma unroll
              for (int a = 0; a < 4; ++a)
                #pragma unroll
                for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
            }
            __syncthreads();
          }
          #pragma unroll
          for (int a = 0; a < 4; ++a)
            #pragma unroll
            for (int b = 0; b < 4; ++b) {
              int r = row0 + ty + 16 * a, c = col0 + tx + 16 * b;
              if (r < M && c < N) st_TOUT(C, cb + (long long)r * N + c, acc[a][b]);
            }
        }
        """;
}
