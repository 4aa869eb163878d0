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

    /// <summary>16 bytes of elements widened to float32, per dtype (unpack_f32 / unpack_bf16 / unpack_f16).</summary>
    private const string Unpack = """
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

        """;

    public const string Source = Unpack + """
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

    /// <summary>
    /// The indexed expert GEMV (Ops.IndexedExperts.Gemv, one decode token through its k selected experts): the expert id
    /// is read from device memory inside the kernel, so nothing comes back to the host and the shapes never change (a CUDA
    /// graph step). Slot s = blockIdx.y computes <c>C[s, n] = round(sum_k float(X[s * ldx + k]) * float(W[ids[s]][n, k]))</c>
    /// with W[e] row n at <c>B + e * lde + n * ldb</c> (elements) and C contiguous [slots, N] in TIN; ldx = 0 gives every
    /// slot the same input row (gate_up_proj), ldx = K one row per slot (down_proj).
    /// <para>With VECOK (K, ldx, ldb, lde multiples of VEC, 16-byte-aligned bases: checked by the driver) the loop is
    /// <see cref="Source"/>'s gemv at M = 1, line for line: one warp per output column, the same 16-byte loads and the same
    /// fmaf order, then warp_sum; so a slot's bits equal the plain step's nn.functional.linear(x, W[e]) on that path.
    /// Otherwise each lane sums k = lane, lane + 32, ... with scalar loads (same warp_sum). An id outside [0, E) writes
    /// NaN to its row (no read outside the weights; the logits show it).</para>
    /// </summary>
    public const string ExpertSource = Unpack + """
        extern "C" __global__ void __launch_bounds__(256) expert_gemv(const void* X, long long ldx, const void* B, const long long* ids, long long lde, long long ldb,
                                                                      void* C, int E, int N, int K, int vecok) {
          const int n = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31, s = blockIdx.y;
          if (n >= N) return;
          const long long ex = ids[s];
          if (ex < 0 || ex >= E) { if (lane == 0) st_TIN(C, (long long)s * N + n, __int_as_float(0x7fc00000)); return; }
          const char* w = (const char*)B + (ex * lde + (long long)n * ldb) * ESZ;
          const char* a = (const char*)X + (long long)s * ldx * ESZ;
          float acc = 0.0f;
          if (vecok) {
            int k0 = lane * VEC;
            for (; k0 + 3 * 32 * VEC < K; k0 += 4 * 32 * VEC) {
              uint4 wr[4];
              #pragma unroll
              for (int u = 0; u < 4; ++u) wr[u] = __ldg((const uint4*)(w + (long long)(k0 + u * 32 * VEC) * ESZ));
              #pragma unroll
              for (int u = 0; u < 4; ++u) {
                float wv[VEC];
                unpack_TIN(wr[u], wv);
                float xv[VEC];
                unpack_TIN(__ldg((const uint4*)(a + (long long)(k0 + u * 32 * VEC) * ESZ)), xv);
                #pragma unroll
                for (int e = 0; e < VEC; ++e) acc = fmaf(xv[e], wv[e], acc);
              }
            }
            for (; k0 < K; k0 += 32 * VEC) {
              float wv[VEC];
              unpack_TIN(__ldg((const uint4*)(w + (long long)k0 * ESZ)), wv);
              float xv[VEC];
              unpack_TIN(__ldg((const uint4*)(a + (long long)k0 * ESZ)), xv);
              #pragma unroll
              for (int e = 0; e < VEC; ++e) acc = fmaf(xv[e], wv[e], acc);
            }
          } else {
            for (int k = lane; k < K; k += 32) acc = fmaf(ld_TIN((const void*)a, k), ld_TIN((const void*)w, k), acc);
          }
          float v = warp_sum(acc);
          if (lane == 0) st_TIN(C, (long long)s * N + n, v);
        }
        """;
}
