namespace Harness.Engine.Cuda.Kernels;

// The element-wise ops the Gemma3n, Gemma4 and Qwen2-VL forwards add to Llama's (each the float32 formula of the engine's
// CPU kernel, one rounding to the output dtype, as ElementwiseKernels' ops).
public struct AbsOp : ICudaElementwiseOp { public static string Name => "abs"; public static string Expression => "fabsf(a)"; }
public struct LogOp : ICudaElementwiseOp { public static string Name => "log"; public static string Expression => "logf(a)"; }
public struct SqrtOp : ICudaElementwiseOp { public static string Name => "sqrt"; public static string Expression => "sqrtf(a)"; }
/// <summary>1 / sqrt(x) as two float32 operations (torch's CPU rsqrt), not the approximate rsqrtf.</summary>
public struct RsqrtOp : ICudaElementwiseOp { public static string Name => "rsqrt"; public static string Expression => "1.0f / sqrtf(a)"; }
public struct TanhOp : ICudaElementwiseOp { public static string Name => "tanh"; public static string Expression => "tanhf(a)"; }
public struct SigmoidOp : ICudaElementwiseOp { public static string Name => "sigmoid"; public static string Expression => "1.0f / (1.0f + expf(-a))"; }
public struct SquareOp : ICudaElementwiseOp { public static string Name => "square"; public static string Expression => "a * a"; }
public struct ReciprocalOp : ICudaElementwiseOp { public static string Name => "reciprocal"; public static string Expression => "1.0f / a"; }
/// <summary>F.softplus (beta 1, threshold 20): x above 20, else log1p(exp(x)).</summary>
public struct SoftplusOp : ICudaElementwiseOp { public static string Name => "softplus"; public static string Expression => "(a > 20.0f ? a : log1pf(expf(a)))"; }
/// <summary>x ** s with torch's special exponents (2, 3, 0.5, -0.5, -1, -2, 1, 0) done as products / sqrt, else powf.</summary>
public struct PowScalarOp : ICudaElementwiseOp
{
    public static string Name => "pow_scalar";
    public static string Expression => "(s == 2.0f ? a * a : s == 3.0f ? a * a * a : s == 0.5f ? sqrtf(a) : s == -0.5f ? 1.0f / sqrtf(a) " +
                                       ": s == -1.0f ? 1.0f / a : s == -2.0f ? 1.0f / (a * a) : s == 1.0f ? a : s == 0.0f ? 1.0f : powf(a, s))";
}
/// <summary>torch.clamp(x, min=s): NaN stays NaN.</summary>
public struct ClampMinOp : ICudaElementwiseOp { public static string Name => "clamp_min"; public static string Expression => "(a != a ? a : (a < s ? s : a))"; }
/// <summary>torch.clamp(x, max=s): NaN stays NaN.</summary>
public struct ClampMaxOp : ICudaElementwiseOp { public static string Name => "clamp_max"; public static string Expression => "(a != a ? a : (a > s ? s : a))"; }
public struct DivScalarOp : ICudaElementwiseOp { public static string Name => "div_scalar"; public static string Expression => "a / s"; }
/// <summary>torch.maximum / torch.minimum: a NaN in either operand gives NaN.</summary>
public struct MaximumOp : ICudaElementwiseOp { public static string Name => "maximum"; public static string Expression => "((a != a || b != b) ? a + b : fmaxf(a, b))"; }
public struct MinimumOp : ICudaElementwiseOp { public static string Name => "minimum"; public static string Expression => "((a != a || b != b) ? a + b : fminf(a, b))"; }

/// <summary>
/// Kernels for the ops of the Gemma3n, Gemma4 (text decoder, MoE, audio and vision towers) and Qwen2-VL forwards that
/// Llama's path does not need. Each states its shape contract and the naive loop it equals (llm.c style).
/// </summary>
public static class ModelKernels
{
    /// <summary>
    /// where: out[i] = m[desc_m(i)] ? a[desc_a(i)] : b[desc_b(i)] bit for bit (ELEM: the W-byte unsigned type; a and b
    /// already in out's dtype); m bytes (torch.bool), every operand a view expanded to out's shape; out contiguous [n].
    /// </summary>
    public const string Where = """
        extern "C" __global__ void where_select(const unsigned char* m, Desc dm, const ELEM* a, Desc da, const ELEM* b, Desc db, ELEM* out, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
            out[i] = m[desc_offset(dm, i)] ? a[desc_offset(da, i)] : b[desc_offset(db, i)];
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
    /// attention_mask in place on contiguous float32 scores [planes, t, s]: with pos = past + i (query i's absolute
    /// position), causal = j &lt;= pos, inWindow = (W &lt;= 0 or j &gt; pos - W), same = vision blocks given (blocks[i] for the t
    /// new rows, -1 text; null: none) and j &gt;= past and blocks[i] &gt;= 0 and blocks[i] == blocks[j - past]:
    /// SLIDING_ONLY 0 (Gemma 3's rule; no blocks: plain causal/sliding): visible = (causal and inWindow) or same;
    /// SLIDING_ONLY 1 (Gemma 4's rule): visible = W &gt; 0 ? inWindow and (causal or same) : causal. Others get -inf.
    /// Equals the CPU Mask loops of Gemma3nAttention, Gemma4Attention (both Gemma4VisionMask rules) and Qwen2VlAttention.
    /// </summary>
    public const string AttentionMask = """
        extern "C" __global__ void attention_mask(float* scores, int t, int s, int past, int window, const int* blocks, int slidingOnly, long long n) {
          for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < n; x += (long long)gridDim.x * blockDim.x) {
            int j = (int)(x % s); int i = (int)((x / s) % t); int pos = past + i;
            bool causal = j <= pos, inWindow = !(window > 0 && j <= pos - window);
            bool same = blocks && j >= past && blocks[i] >= 0 && blocks[i] == blocks[j - past];
            bool visible = slidingOnly ? (window > 0 ? inWindow && (causal || same) : causal) : (causal && inWindow) || same;
            if (!visible) scores[x] = -__int_as_float(0x7f800000);
          }
        }
        """;

    /// <summary>
    /// index_select along DIM: out[.., r, ..] = in[.., ids[r], ..] bit for bit (ELEM the W-byte type); in a strided view
    /// whose desc carries OUT's shape (dim DIM holds ids' length) and in's strides; ids int64 already wrapped into
    /// [0, size); an id of -1 writes a zero element (VocabParallelEmbedding's rows of other ranks). out contiguous [n].
    /// </summary>
    public const string IndexSelect = """
        extern "C" __global__ void index_select(const ELEM* in, Desc din, const long long* ids, int dim, ELEM* out, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            long long off = din.offset, rem = i; bool zero = false;
            for (int k = din.rank - 1; k >= 0; --k) {
              long long sz = din.shape[k]; long long ix = rem % sz; rem /= sz;
              if (k == dim) { ix = ids[ix]; if (ix < 0) zero = true; }
              off += ix * din.strides[k];
            }
            out[i] = zero ? (ELEM)0 : in[off];
          }
        }
        """;

    /// <summary>
    /// gather along DIM (torch.gather): out[idx] = in[idx with coordinate DIM replaced by index[idx]]; index int64 [n]
    /// contiguous of out's shape with values wrapped into [0, size); din carries out's shape and in's strides.
    /// </summary>
    public const string Gather = """
        extern "C" __global__ void gather(const ELEM* in, Desc din, const long long* index, int dim, ELEM* out, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            long long off = din.offset, rem = i;
            for (int k = din.rank - 1; k >= 0; --k) {
              long long sz = din.shape[k]; long long ix = rem % sz; rem /= sz;
              if (k == dim) ix = index[i];
              off += ix * din.strides[k];
            }
            out[i] = in[off];
          }
        }
        """;

    /// <summary>
    /// im2col for Conv2d(kernel 3x3, stride 2, padding 1) on channels-last x [B, H, W, C] contiguous: out[(b, oy, ox), c*9 +
    /// ky*3 + kx] = x[b, 2*oy - 1 + ky, 2*ox - 1 + kx, c], zero outside the image; out contiguous [B*Ho*Wo, C*9], bits copied.
    /// </summary>
    public const string Im2Col3x3S2 = """
        extern "C" __global__ void im2col3x3s2(const ELEM* x, ELEM* out, int b, int h, int w, int c, int ho, int wo, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            int k = c * 9; int col = (int)(i % k); long long row = i / k;
            int ox = (int)(row % wo); int oy = (int)((row / wo) % ho); int bi = (int)(row / ((long long)wo * ho));
            int ch = col / 9, ky = (col % 9) / 3, kx = col % 3;
            int iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
            out[i] = (iy < 0 || iy >= h || ix < 0 || ix >= w) ? (ELEM)0 : x[(((long long)bi * h + iy) * w + ix) * c + ch];
          }
        }
        """;

    /// <summary>
    /// depthwise causal conv1d (Gemma4AudioCausalConv1d, groups = channels, no bias) on time-major x [B, T, C] contiguous,
    /// weight [C, 1, K] contiguous: y[b, t, c] = sum_{j ascending} w[c, j] * x[b, t - (K-1) + j, c] (zero before 0), each
    /// product and sum a separately rounded float32 op (no FMA: the CPU loop), rounded once to TIN. out contiguous [B, T, C].
    /// </summary>
    public const string DepthwiseCausalConv1d = """
        extern "C" __global__ void dw_causal_conv1d(const void* x, const void* wt, void* out, int t, int c, int k, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            int ch = (int)(i % c); long long bt = i / c; int ti = (int)(bt % t); long long bi = bt / t;
            float acc = 0.0f;
            for (int j = 0; j < k; ++j) {
              int src = ti - (k - 1) + j;
              if (src >= 0) acc = __fadd_rn(acc, __fmul_rn(ld_TW(wt, (long long)ch * k + j), ld_TIN(x, (bi * t + src) * c + ch)));
            }
            st_TIN(out, i, acc);
          }
        }
        """;

    /// <summary>
    /// context windows (Gemma4 audio _extract_block_context): x [B, T, N, H] contiguous -> out [B, N, U, C, H] with
    /// out[b, n, u, c, :] = x[b, u*W - left + c, n, :] when that position is in [0, T), else zeros; bits copied.
    /// </summary>
    public const string ContextWindows = """
        extern "C" __global__ void context_windows(const ELEM* x, ELEM* out, int t, int nh, int u, int w, int ctx, int hd, int left, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            int e = (int)(i % hd); long long r = i / hd;
            int c = (int)(r % ctx); r /= ctx; int ui = (int)(r % u); r /= u; int ni = (int)(r % nh); long long bi = r / nh;
            int pos = ui * w - left + c;
            out[i] = (pos < 0 || pos >= t) ? (ELEM)0 : x[((bi * t + pos) * nh + ni) * hd + e];
          }
        }
        """;
}
