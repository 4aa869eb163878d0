namespace Harness.Engine.Cuda.Kernels;

/// <summary>RoPE and attention over the KV cache.</summary>
public static class AttentionKernels
{
    /// <summary>
    /// rope (HF apply_rotary_pos_emb, rotate_half layout): x [planes, t, d] strided (planes = batch*heads, flattened by
    /// the driver into desc dims [p, t, d]), cos/sin [t, d] contiguous in the model dtype. With h = d/2:
    /// out[p, i, j] = rnd(rnd(x[j] * cos[i, j]) + rnd(rot[j] * sin[i, j])), rot[j] = -x[j + h] for j &lt; h else x[j - h]
    /// (torch's two products and the sum each round to the dtype). out contiguous [p, t, d].
    /// </summary>
    public const string Rope = """
        extern "C" __global__ void rope(const void* x, Desc dx, const void* cs, const void* sn, void* out, long long n) {
          int d = dx.shape[2], t = dx.shape[1], h = d / 2;
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            int j = (int)(i % d); long long pt = i / d; int tok = (int)(pt % t); long long p = pt / t;
            long long base = p * dx.strides[0] + (long long)tok * dx.strides[1];
            float xv = ld_TIN(x, base + (long long)j * dx.strides[2]);
            float rv = j < h ? -ld_TIN(x, base + (long long)(j + h) * dx.strides[2]) : ld_TIN(x, base + (long long)(j - h) * dx.strides[2]);
            float c = ld_TIN(cs, (long long)tok * d + j), s = ld_TIN(sn, (long long)tok * d + j);
            st_TIN(out, i, rnd_TIN(xv * c) + rnd_TIN(rv * s));
          }
        }
        """;

    /// <summary>
    /// attention (HF eager, grouped-query): q [heads, t, hd], k and v [kvHeads, s, hd] (strided views of the cache), query i
    /// at absolute position past + i sees key j when j &lt;= past + i (causal) and past + i - j &lt; window (window &lt;= 0: none).
    /// Naive computation it equals: scores = rnd(rnd(q . k_j) * scale) (matmul then mul, each rounding to the dtype);
    /// p = softmax_fp32(masked scores) rounded to the dtype; out[h, i, :] = rnd(sum_j p_j v_j) (fp32 accumulation).
    /// One block per (query, head); scores in dynamic shared memory (s floats).
    /// </summary>
    public const string Attention = """
        extern "C" __global__ void attention(const void* q, Desc dq, const void* k, Desc dk, const void* v, Desc dv, void* out,
                                             int past, int window, float scale) {
          extern __shared__ float sc[];
          __shared__ float sh[32];
          int i = blockIdx.x, head = blockIdx.y;
          int t = dq.shape[1], hd = dq.shape[2], s = dk.shape[1], heads = dq.shape[0], kvh = dk.shape[0];
          int kh = head / (heads / kvh);
          long long qb = (long long)head * dq.strides[0] + (long long)i * dq.strides[1];
          int pos = past + i;
          for (int j = threadIdx.x; j < s; j += blockDim.x) {
            bool visible = j <= pos && (window <= 0 || pos - j < window);
            float acc = 0.0f;
            if (visible) {
              long long kb = (long long)kh * dk.strides[0] + (long long)j * dk.strides[1];
              #pragma unroll 8
              for (int e = 0; e < hd; ++e) acc = fmaf(ld_TIN(q, qb + e * dq.strides[2]), ld_TIN(k, kb + e * dk.strides[2]), acc);
              acc = rnd_TIN(rnd_TIN(acc) * scale);
            }
            sc[j] = visible ? acc : -__int_as_float(0x7f800000);
          }
          __syncthreads();
          float m = -__int_as_float(0x7f800000);
          for (int j = threadIdx.x; j < s; j += blockDim.x) m = fmaxf(m, sc[j]);
          m = block_max(m, sh);
          float sum = 0.0f;
          for (int j = threadIdx.x; j < s; j += blockDim.x) sum += expf(sc[j] - m);
          sum = block_sum(sum, sh);
          __syncthreads();
          for (int j = threadIdx.x; j < s; j += blockDim.x) sc[j] = rnd_TIN(expf(sc[j] - m) / sum);
          __syncthreads();
          long long ob = ((long long)head * t + i) * hd;
          for (int e = threadIdx.x; e < hd; e += blockDim.x) {
            float acc = 0.0f;
            long long vb = (long long)kh * dv.strides[0] + (long long)e * dv.strides[2];
            #pragma unroll 8
            for (int j = 0; j < s; ++j) acc = fmaf(sc[j], ld_TIN(v, vb + (long long)j * dv.strides[1]), acc);
            st_TIN(out, ob + e, acc);
          }
        }
        """;

    /// <summary>causal mask in place on float32 scores [planes, t, s]: scores[p, i, j] = -inf where j &gt; past + i.</summary>
    public const string MaskFuture = """
        extern "C" __global__ void mask_future(float* scores, int t, int s, int past, long long n) {
          for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < n; x += (long long)gridDim.x * blockDim.x) {
            int j = (int)(x % s); int i = (int)((x / s) % t);
            if (j > past + i) scores[x] = -__int_as_float(0x7f800000);
          }
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
}
