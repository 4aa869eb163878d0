namespace Harness.Engine.Cuda.Kernels;

/// <summary>
/// Decode GEMV (normal mode, M &lt;= 8): C[m, n] = sum_k A[m, k] * B[k, n] with A [M, K] and B [K, N] both contiguous
/// along K (a linear layer's x @ W^T: W [N, K] row-major), C contiguous [M, N] in TIN.
/// <para>Naive computation it equals up to the order of the float32 sum: <c>C[m, n] = round(sum_k float(A[m,k]) * float(W[n,k]))</c>.
/// Here one warp per output column n streams W's row with 16-byte loads (lane l takes k = 16B-vector l, l + 32, ...),
/// keeps M float32 partial sums per lane and reduces them with a butterfly: the weight is read once at full width, which
/// is all that decode costs. The order depends on K only, but M &lt;= 8 takes this path and M &gt; 8 cuBLAS, so it is
/// not batch-invariant (batch-invariant mode never uses it).</para>
/// Preconditions (checked by the driver): K, lda and ldb multiples of VEC (16 bytes of elements), 16-byte-aligned bases.
/// </summary>
public static class GemvKernel
{
    public const int MaxRows = 8;

    public const string Source = """
        __device__ __forceinline__ void unpack_f32(uint4 v, float* o) { o[0] = __uint_as_float(v.x); o[1] = __uint_as_float(v.y); o[2] = __uint_as_float(v.z); o[3] = __uint_as_float(v.w); }
        __device__ __forceinline__ void unpack_bf16(uint4 v, float* o) {
          unsigned u[4] = {v.x, v.y, v.z, v.w};
          #pragma unroll
          for (int i = 0; i < 4; ++i) { o[2 * i] = __uint_as_float(u[i] << 16); o[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u); }
        }
        __device__ __forceinline__ void unpack_f16(uint4 v, float* o) {
          unsigned u[4] = {v.x, v.y, v.z, v.w};
          #pragma unroll
          for (int i = 0; i < 4; ++i) { o[2 * i] = f16_to_f((unsigned short)(u[i] & 0xffffu)); o[2 * i + 1] = f16_to_f((unsigned short)(u[i] >> 16)); }
        }
        extern "C" __global__ void __launch_bounds__(256) gemv(const void* A, long long lda, const void* B, long long ldb, void* C, int M, int N, int K) {
          const int n = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
          if (n >= N) return;
          const char* w = (const char*)B + (long long)n * ldb * ESZ;
          float acc[8];
          #pragma unroll
          for (int m = 0; m < 8; ++m) acc[m] = 0.0f;
          int k0 = lane * VEC;
          // four of the lane's weight vectors in flight at once (the sums still run over k0 ascending: same bits)
          for (; k0 + 3 * 32 * VEC < K; k0 += 4 * 32 * VEC) {
            uint4 wr[4];
            #pragma unroll
            for (int u = 0; u < 4; ++u) wr[u] = __ldg((const uint4*)(w + (long long)(k0 + u * 32 * VEC) * ESZ));
            #pragma unroll
            for (int u = 0; u < 4; ++u) {
              float wv[VEC];
              unpack_TIN(wr[u], wv);
              #pragma unroll
              for (int m = 0; m < 8; ++m) {
                if (m < M) {
                  float xv[VEC];
                  unpack_TIN(__ldg((const uint4*)((const char*)A + ((long long)m * lda + k0 + u * 32 * VEC) * ESZ)), xv);
                  #pragma unroll
                  for (int e = 0; e < VEC; ++e) acc[m] = fmaf(xv[e], wv[e], acc[m]);
                }
              }
            }
          }
          for (; k0 < K; k0 += 32 * VEC) {
            float wv[VEC];
            unpack_TIN(__ldg((const uint4*)(w + (long long)k0 * ESZ)), wv);
            #pragma unroll
            for (int m = 0; m < 8; ++m) {
              if (m < M) {
                float xv[VEC];
                unpack_TIN(__ldg((const uint4*)((const char*)A + ((long long)m * lda + k0) * ESZ)), xv);
                #pragma unroll
                for (int e = 0; e < VEC; ++e) acc[m] = fmaf(xv[e], wv[e], acc[m]);
              }
            }
          }
          #pragma unroll
          for (int m = 0; m < 8; ++m) {
            if (m < M) {
              float v = warp_sum(acc[m]);
              if (lane == 0) st_TIN(C, (long long)m * N + n, v);
            }
          }
        }
        """;
}
