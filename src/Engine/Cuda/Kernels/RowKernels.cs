namespace Harness.Engine.Cuda.Kernels;

/// <summary>
/// Row reductions: one block of 256 threads per row, fixed-order sums (each thread a strided partial sum in ascending
/// index, then <c>block_sum</c>'s fixed butterfly), so a row's bits never depend on how many rows the launch holds:
/// batch-invariant by construction in both modes. Rows are contiguous [rows, n] (the driver makes them so).
/// </summary>
public static class RowKernels
{
    public const int Threads = 256;

    /// <summary>
    /// rms_norm: h = float(x[r]); ms = sum(h*h)/n; y = h * (1/sqrtf(ms + eps)); KIND 0 (Llama): y = rnd_TIN(y) * w (then
    /// rounded to TOUT, torch's promotion); KIND 1 (Gemma 1+w): y * (1 + w); KIND 2 (scaled): y * w; KIND 3: y. One rounding to TOUT.
    /// </summary>
    public const string RmsNorm = """
        extern "C" __global__ void rms_norm(const void* x, const void* w, void* out, int n, float eps, int kind) {
          __shared__ float sh[32];
          long long row = blockIdx.x;
          const long long base = row * (long long)n;
          float ss = 0.0f;
          for (int j = threadIdx.x; j < n; j += blockDim.x) { float h = ld_TIN(x, base + j); ss = fmaf(h, h, ss); }
          ss = block_sum(ss, sh);
          float inv = 1.0f / sqrtf(ss / (float)n + eps);
          for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float y = ld_TIN(x, base + j) * inv;
            if (kind == 0) y = rnd_TIN(y) * ld_TW(w, j);
            else if (kind == 1) y = y * (1.0f + ld_TW(w, j));
            else if (kind == 2) y = y * ld_TW(w, j);
            st_TOUT(out, base + j, y);
          }
        }
        """;

    /// <summary>
    /// add_rms_norm (the decoder's residual add fused with the next Llama RMSNorm): s = rnd_TIN(a[r] + b[r]) written to
    /// sum[r] (torch's add in the dtype), then exactly <see cref="RmsNorm"/> with KIND 0 on s into out[r].
    /// </summary>
    public const string AddRmsNorm = """
        extern "C" __global__ void add_rms_norm(const void* a, const void* b, void* sum, const void* w, void* out, int n, float eps) {
          __shared__ float sh[32];
          const long long base = (long long)blockIdx.x * n;
          float ss = 0.0f;
          for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float h = rnd_TIN(ld_TIN(a, base + j) + ld_TIN(b, base + j));
            st_TIN(sum, base + j, h);
            ss = fmaf(h, h, ss);
          }
          ss = block_sum(ss, sh);
          float inv = 1.0f / sqrtf(ss / (float)n + eps);
          for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float h = rnd_TIN(ld_TIN(a, base + j) + ld_TIN(b, base + j));
            st_TOUT(out, base + j, rnd_TIN(h * inv) * ld_TW(w, j));
          }
        }
        """;

    /// <summary>layer_norm: mean = sum(h)/n; var = sum((h-mean)^2)/n; y = (h-mean)/sqrtf(var+eps) * w + b (w, b optional: flags).</summary>
    public const string LayerNorm = """
        extern "C" __global__ void layer_norm(const void* x, const void* w, const void* b, void* out, int n, float eps, int hasW, int hasB) {
          __shared__ float sh[32];
          const long long base = (long long)blockIdx.x * n;
          float s = 0.0f;
          for (int j = threadIdx.x; j < n; j += blockDim.x) s += ld_TIN(x, base + j);
          float mean = block_sum(s, sh) / (float)n;
          float v = 0.0f;
          for (int j = threadIdx.x; j < n; j += blockDim.x) { float d = ld_TIN(x, base + j) - mean; v = fmaf(d, d, v); }
          float rstd = 1.0f / sqrtf(block_sum(v, sh) / (float)n + eps);
          for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float y = (ld_TIN(x, base + j) - mean) * rstd;
            if (hasW) y = y * ld_TW(w, j);
            if (hasB) y = y + ld_TW(b, j);
            st_TIN(out, base + j, y);
          }
        }
        """;

    /// <summary>
    /// softmax / log_softmax over the last dim in float32: m = max(h); e = expf(h - m); s = sum(e); softmax = e / s,
    /// log_softmax = (h - m) - logf(s). Output rounded once to TOUT. A row of all -inf gives NaN, as torch.
    /// </summary>
    public const string Softmax = """
        extern "C" __global__ void softmax(const void* x, void* out, int n, int logMode) {
          __shared__ float sh[32];
          const long long base = (long long)blockIdx.x * n;
          float m = -__int_as_float(0x7f800000);
          for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, ld_TIN(x, base + j));
          m = block_max(m, sh);
          float s = 0.0f;
          for (int j = threadIdx.x; j < n; j += blockDim.x) s += expf(ld_TIN(x, base + j) - m);
          s = block_sum(s, sh);
          float ls = logf(s);
          for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float h = ld_TIN(x, base + j) - m;
            st_TOUT(out, base + j, logMode ? h - ls : expf(h) / s);
          }
        }
        """;

    /// <summary>
    /// row_reduce over the last dim of x [rows, n] (contiguous): KIND 0 sum, 1 mean (sum / n), 2 max, 3 min (value and
    /// first index), 4 argmax, 5 argmin. Sums: each thread a strided partial sum in ascending index, then block_sum's fixed
    /// butterfly (one block per row: batch-invariant). Max/min: a NaN counts as the extreme, ties keep the lowest index
    /// (torch.max/argmax). values float32 [rows] (kinds 0-3), indices int64 [rows] (kinds 2-5).
    /// </summary>
    public const string RowReduce = """
        __device__ __forceinline__ bool better(float a, int ia, float b, int ib, int wantMax) {
          bool na = a != a, nb = b != b;
          if (na != nb) return na;
          if (!na && a != b) return wantMax ? a > b : a < b;
          return ia < ib;
        }
        extern "C" __global__ void row_reduce(const void* x, float* values, long long* indices, int n, int kind) {
          __shared__ float sh[32];
          __shared__ float sv[256];
          __shared__ int si[256];
          const long long base = (long long)blockIdx.x * n;
          if (kind <= 1) {
            float s = 0.0f;
            for (int j = threadIdx.x; j < n; j += blockDim.x) s += ld_TIN(x, base + j);
            s = block_sum(s, sh);
            if (threadIdx.x == 0) values[blockIdx.x] = kind == 1 ? s / (float)n : s;
            return;
          }
          int wantMax = kind == 2 || kind == 4;
          float bv = 0.0f; int bi = -1;
          for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float v = ld_TIN(x, base + j);
            if (bi < 0 || better(v, j, bv, bi, wantMax)) { bv = v; bi = j; }
          }
          sv[threadIdx.x] = bv; si[threadIdx.x] = bi;
          __syncthreads();
          for (int w = blockDim.x / 2; w > 0; w >>= 1) {
            if (threadIdx.x < w) {
              float ov = sv[threadIdx.x + w]; int oi = si[threadIdx.x + w];
              if (oi >= 0 && (si[threadIdx.x] < 0 || better(ov, oi, sv[threadIdx.x], si[threadIdx.x], wantMax))) { sv[threadIdx.x] = ov; si[threadIdx.x] = oi; }
            }
            __syncthreads();
          }
          if (threadIdx.x == 0) {
            if (kind <= 3) values[blockIdx.x] = sv[0];
            if (indices) indices[blockIdx.x] = si[0];
          }
        }
        """;

    /// <summary>
    /// mean_std (Gemma3n's _gaussian_topk statistics): per row of x [rows, n] contiguous, in float64 as the CPU engine:
    /// m = sum(x) / n; std = sqrt(sum((x - m)^2) / n) (unbiased=False); each rounded once to float32 into mean[r], std[r].
    /// Double partial sums in ascending index per thread, then a fixed shared-memory tree (one block of 256 per row).
    /// </summary>
    public const string MeanStd = """
        __device__ double block_sum_d(double v, double* sh) {
          sh[threadIdx.x] = v;
          __syncthreads();
          for (int w = blockDim.x / 2; w > 0; w >>= 1) {
            if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
            __syncthreads();
          }
          double r = sh[0];
          __syncthreads();
          return r;
        }
        extern "C" __global__ void mean_std(const void* x, float* mean, float* std, int n) {
          __shared__ double sh[256];
          const long long base = (long long)blockIdx.x * n;
          double s = 0.0;
          for (int j = threadIdx.x; j < n; j += blockDim.x) s += (double)ld_TIN(x, base + j);
          double m = block_sum_d(s, sh) / n;
          double v = 0.0;
          for (int j = threadIdx.x; j < n; j += blockDim.x) { double d = (double)ld_TIN(x, base + j) - m; v += d * d; }
          v = block_sum_d(v, sh);
          if (threadIdx.x == 0) { mean[blockIdx.x] = (float)m; std[blockIdx.x] = (float)sqrt(v / n); }
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

    /// <summary>
    /// sum_in_id_order (Ops.IndexedExperts.SumInIdOrder: HF's index_add_ of one token's experts into zeros): y [slots, n]
    /// contiguous, ids int64 [slots] -> out [n] with, per column j, <c>acc = 0; for s in ascending (ids[s], s): acc =
    /// rnd(acc + y[s, j])</c>, each add rounded to TIN as the per-expert loop's adds. One thread per column; each picks the
    /// next slot by scanning the ids (slots is top_k, a handful), so nothing is sorted on the host and nothing read back.
    /// </summary>
    public const string SumInIdOrder = """
        extern "C" __global__ void sum_in_id_order(const void* y, const long long* ids, void* out, int slots, int n) {
          for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
            float acc = 0.0f;
            long long pid = -1; int ps = -1;                       // the (id, slot) added last
            for (int r = 0; r < slots; ++r) {
              int best = -1; long long bid = 0;
              for (int s = 0; s < slots; ++s) {
                long long id = ids[s];
                bool after = id > pid || (id == pid && s > ps);
                if (after && (best < 0 || id < bid)) { best = s; bid = id; }
              }
              acc = rnd_TIN(acc + ld_TIN(y, (long long)best * n + j));
              pid = bid; ps = best;
            }
            st_TIN(out, j, acc);
          }
        }
        """;
}
