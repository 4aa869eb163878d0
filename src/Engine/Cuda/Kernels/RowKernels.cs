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
}
