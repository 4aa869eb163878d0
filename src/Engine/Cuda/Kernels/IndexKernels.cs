namespace Harness.Engine.Cuda.Kernels;

/// <summary>Embedding lookup and top-k.</summary>
public static class IndexKernels
{
    /// <summary>
    /// embedding: out[r, :] = table[ids[r], :] bit for bit (ELEM is the W-byte unsigned type); table contiguous [vocab, hidden],
    /// ids int64 [rows]. An id outside [0, vocab) writes its row index + 1 into *bad (the driver reads it back and throws).
    /// </summary>
    public const string Embedding = """
        extern "C" __global__ void embedding(const ELEM* table, const long long* ids, ELEM* out, int rows, int hidden, int vocab, int* bad) {
          int r = blockIdx.x;
          long long id = ids[r];
          if (id < 0 || id >= vocab) { if (threadIdx.x == 0) atomicCAS(bad, 0, r + 1); return; }
          for (int j = threadIdx.x; j < hidden; j += blockDim.x) out[(long long)r * hidden + j] = table[id * hidden + j];
        }
        """;

    /// <summary>
    /// topk (torch.topk largest, sorted): per row of x [rows, n] contiguous, k rounds of a block argmax; round q picks the
    /// largest element ranked below the previous pick in the order (value descending, NaN above all, then index ascending).
    /// values (float32) and indices (int64) [rows, k].
    /// </summary>
    public const string TopK = """
        __device__ __forceinline__ bool before(float a, int ia, float b, int ib) {
          bool na = a != a, nb = b != b;
          if (na != nb) return na;
          if (!na && a != b) return a > b;
          return ia < ib;
        }
        extern "C" __global__ void topk(const void* x, float* values, long long* indices, int n, int k) {
          __shared__ float sv[256];
          __shared__ int si[256];
          const long long base = (long long)blockIdx.x * n;
          float pv = 0.0f; int pi = -1;
          for (int q = 0; q < k; ++q) {
            float bv = 0.0f; int bi = -1;
            for (int j = threadIdx.x; j < n; j += blockDim.x) {
              float v = ld_TIN(x, base + j);
              if (pi >= 0 && !before(pv, pi, v, j)) continue;
              if (bi < 0 || before(v, j, bv, bi)) { bv = v; bi = j; }
            }
            sv[threadIdx.x] = bv; si[threadIdx.x] = bi;
            __syncthreads();
            for (int w = blockDim.x / 2; w > 0; w >>= 1) {
              if (threadIdx.x < w) {
                float ov = sv[threadIdx.x + w]; int oi = si[threadIdx.x + w];
                if (oi >= 0 && (si[threadIdx.x] < 0 || before(ov, oi, sv[threadIdx.x], si[threadIdx.x]))) { sv[threadIdx.x] = ov; si[threadIdx.x] = oi; }
              }
              __syncthreads();
            }
            pv = sv[0]; pi = si[0];
            if (threadIdx.x == 0) { values[(long long)blockIdx.x * k + q] = pv; indices[(long long)blockIdx.x * k + q] = pi; }
            __syncthreads();
          }
        }
        """;
}
