namespace Harness.Engine.Cuda.Kernels;

/// <summary>
/// Kernels of a decode step whose position lives in device memory (an int32 <c>pos</c>: the number of tokens already in
/// the KV cache), so that one CUDA graph of the step replays at every position. Each equals an eager op bit for bit.
/// </summary>
public static class DecodeKernels
{
    /// <summary>
    /// rows_at: oa[r, :] = a[pos + off + r, :], ob[r, :] = b[pos + off + r, :] for r &lt; rows (ELEM the W-byte unsigned
    /// type; a, b contiguous [P, d] tables, the cos/sin of every position; off a device int32 or null for 0: Qwen2-VL's
    /// rope_deltas): what narrowing the tables at the host's position copies.
    /// </summary>
    public const string RowsAt = """
        extern "C" __global__ void rows_at(const ELEM* a, const ELEM* b, const int* pos, const int* off, ELEM* oa, ELEM* ob, int rows, int d) {
          long long base = (long long)(*pos + (off ? *off : 0)) * d, n = (long long)rows * d;
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            oa[i] = a[base + i]; ob[i] = b[base + i];
          }
        }
        """;

    /// <summary>
    /// kv_append_at: k, v [kv, t, hd] (strided views) copied bit for bit into rows [pos, pos + t) of the contiguous caches
    /// ck, cv [kv, cap, hd]: KvCache.Append at the device's position.
    /// </summary>
    public const string KvAppendAt = """
        extern "C" __global__ void kv_append_at(const ELEM* k, Desc dk, const ELEM* v, Desc dv, ELEM* ck, ELEM* cv, const int* pos,
                                                int cap, long long n) {
          int p = *pos, t = dk.shape[1], hd = dk.shape[2];
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            int e = (int)(i % hd); long long r = i / hd; int tok = (int)(r % t); long long h = r / t;
            long long dst = (h * cap + p + tok) * hd + e;
            ck[dst] = k[desc_offset(dk, i)];
            cv[dst] = v[desc_offset(dv, i)];
          }
        }
        """;

    /// <summary>
    /// rope_append_at: one launch for a graph step's <see cref="AttentionKernels.Rope"/> of q and of k plus the cache append:
    /// q [heads, t, d], k and v [kv, t, d] (strided), cos/sin [t, d] contiguous. Elements [0, nq) are q's rotated values,
    /// written contiguous to qout [heads, t, d]; [nq, nq + nk) k's rotated values, written to ck [kv, cap, d] at rows
    /// pos..pos+t-1; [nq + nk, nq + 2 nk) v's values copied to cv likewise. The rotation is rope's arithmetic:
    /// rnd(rnd(x * cos) + rnd(rot * sin)), so the bits equal rope then kv_append_at.
    /// </summary>
    public const string RopeAppendAt = """
        __device__ __forceinline__ float rope_elem(const void* x, const Desc& dx, const void* cs, const void* sn, long long i) {
          int d = dx.shape[2], t = dx.shape[1], h = d / 2;
          int j = (int)(i % d); long long pt = i / d; int tok = (int)(pt % t); long long p = pt / t;
          long long base = p * dx.strides[0] + (long long)tok * dx.strides[1];
          float xv = ld_TIN(x, base + (long long)j * dx.strides[2]);
          float rv = j < h ? -ld_TIN(x, base + (long long)(j + h) * dx.strides[2]) : ld_TIN(x, base + (long long)(j - h) * dx.strides[2]);
          float c = ld_TIN(cs, (long long)tok * d + j), s = ld_TIN(sn, (long long)tok * d + j);
          return rnd_TIN(xv * c) + rnd_TIN(rv * s);
        }
        extern "C" __global__ void rope_append_at(const void* q, Desc dq, const void* k, Desc dk, const void* v, Desc dv, const void* cs,
                                                  const void* sn, void* qout, void* ck, void* cv, const int* pos, int cap, long long nq, long long nk) {
          int p0 = *pos, t = dk.shape[1], d = dk.shape[2];
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < nq + 2 * nk; i += (long long)gridDim.x * blockDim.x) {
            if (i < nq) { st_TIN(qout, i, rope_elem(q, dq, cs, sn, i)); continue; }
            long long x = i < nq + nk ? i - nq : i - nq - nk;
            int e = (int)(x % d); long long r = x / d; int tok = (int)(r % t); long long hh = r / t;
            long long dst = (hh * cap + p0 + tok) * d + e;
            if (i < nq + nk) st_TIN(ck, dst, rope_elem(k, dk, cs, sn, x));
            else st_TIN(cv, dst, ld_TIN(v, desc_offset(dv, x)));
          }
        }
        """;

    /// <summary>advance: *pos += tokens; *id = *pick (the greedy token becomes the next step's input). One thread.</summary>
    /// <summary>
    /// ids_map: per id of ids [rows] (int64, from our own argmax: on the device), inside = lo &lt;= id &lt; hi;
    /// out = (fill_inside ? !inside : inside) ? id : fill, minus shift; mask (bool, or null) = inside. The host's id
    /// rewrites of a decode step without the read-back: Gemma3n's per-layer ids (id &lt; vocab_size_per_layer_input, else 0),
    /// its vision/audio hard ids and masks (torch.where(mask, id, last) - vocab_offset), Gemma4's placeholders -> pad.
    /// </summary>
    public const string IdsMap = """
        extern "C" __global__ void ids_map(const long long* ids, long long* out, unsigned char* mask, int rows, long long lo, long long hi,
                                           long long fill, int fill_inside, long long shift) {
          for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x) {
            long long id = ids[r];
            bool inside = id >= lo && id < hi;
            bool keep = fill_inside ? !inside : inside;
            out[r] = (keep ? id : fill) - shift;
            if (mask) mask[r] = inside ? 1 : 0;
          }
        }
        """;

    public const string Advance = """
        extern "C" __global__ void advance(int* pos, long long* id, const long long* pick, int tokens) {
          if (blockIdx.x == 0 && threadIdx.x == 0) { *pos += tokens; *id = *pick; }
        }
        """;

    /// <summary>Floats of the K/V tile of <see cref="AttentionTiledAt"/> (CH keys of hd + 1 floats: 128 x 65, 64 x 129, 32 x 257).</summary>
    public const int TileFloats = 8320;

    /// <summary>
    /// attention_tiled_at: the same function as <see cref="AttentionAt"/>, bit for bit (every sum in the same order: q.k over e
    /// ascending, the softmax's max and thread-strided sum over 128 threads, p.v over j ascending), with keys and values
    /// staged through shared memory in chunks of CH rows (CH = 128, 64, 32 for hd &lt;= 64, 128, 256) loaded by the whole
    /// block, 16 bytes a thread where VECOK (contiguous head dim, aligned rows), instead of one thread walking each key
    /// and value column through global memory. One block of 128 threads per (query, head); hd &lt;= 256.
    /// </summary>
    public const string AttentionTiledAt = """
        __device__ __forceinline__ void load_rows(float* tile, int pitch, const void* src, Desc d, long long base, int j0, int rows, int hd, int vec) {
          if (vec) {
            const int per = 16 / ESZ, nv = hd / per;
            #pragma unroll 4
            for (int x = threadIdx.x; x < rows * nv; x += blockDim.x) {
              int r = x / nv, e = (x - r * nv) * per;
              uint4 w = *(const uint4*)((const char*)src + (base + (long long)(j0 + r) * d.strides[1] + e) * ESZ);
              const void* pw = &w;
              #pragma unroll
              for (int u = 0; u < 16 / ESZ; ++u) tile[r * pitch + e + u] = ld_TIN(pw, u);
            }
          } else {
            #pragma unroll 8
            for (int x = threadIdx.x; x < rows * hd; x += blockDim.x) {
              int r = x / hd, e = x - r * hd;
              tile[r * pitch + e] = ld_TIN(src, base + (long long)(j0 + r) * d.strides[1] + (long long)e * d.strides[2]);
            }
          }
        }
        extern "C" __global__ void __launch_bounds__(128) attention_tiled_at(const void* q, Desc dq, const void* k, Desc dk, const void* v, Desc dv,
                                                                          void* out, const int* pastp, int window, float scale, int vec) {
          extern __shared__ float sc[];
          __shared__ float sh[32];
          __shared__ float qs[256];
          __shared__ float tile[TILES];
          const float ninf = -__int_as_float(0x7f800000);
          int past = *pastp;
          int i = blockIdx.x, head = blockIdx.y;
          int t = dq.shape[1], hd = dq.shape[2], s = past + t, heads = dq.shape[0], kvh = dk.shape[0];
          int kh = head / (heads / kvh);
          int ch = hd <= 64 ? 128 : (hd <= 128 ? 64 : 32);
          long long qb = (long long)head * dq.strides[0] + (long long)i * dq.strides[1];
          for (int e = threadIdx.x; e < hd; e += blockDim.x) qs[e] = ld_TIN(q, qb + e * dq.strides[2]);
          int pos = past + i;
          for (int j0 = 0; j0 < s; j0 += ch) {
            int rows = s - j0 < ch ? s - j0 : ch;
            __syncthreads();
            load_rows(tile, hd + 1, k, dk, (long long)kh * dk.strides[0], j0, rows, hd, vec);
            __syncthreads();
            int r = threadIdx.x;
            if (r < rows) {
              int j = j0 + r;
              bool visible = j <= pos && (window <= 0 || pos - j < window);
              float acc = 0.0f;
              if (visible) {
                const float* kr = tile + r * (hd + 1);
                for (int e = 0; e < hd; ++e) acc = fmaf(qs[e], kr[e], acc);
                acc = rnd_TIN(rnd_TIN(acc) * scale);
              }
              sc[j] = visible ? acc : ninf;
            }
          }
          __syncthreads();
          float m = ninf;
          for (int j = threadIdx.x; j < s; j += blockDim.x) m = fmaxf(m, sc[j]);
          m = block_max(m, sh);
          float sum = 0.0f;
          for (int j = threadIdx.x; j < s; j += blockDim.x) sum += expf(sc[j] - m);
          sum = block_sum(sum, sh);
          __syncthreads();
          for (int j = threadIdx.x; j < s; j += blockDim.x) sc[j] = rnd_TIN(expf(sc[j] - m) / sum);
          float acc0 = 0.0f, acc1 = 0.0f;
          int e0 = threadIdx.x, e1 = threadIdx.x + blockDim.x;
          for (int j0 = 0; j0 < s; j0 += ch) {
            int rows = s - j0 < ch ? s - j0 : ch;
            __syncthreads();
            load_rows(tile, hd, v, dv, (long long)kh * dv.strides[0], j0, rows, hd, vec);
            __syncthreads();
            if (e0 < hd) for (int r = 0; r < rows; ++r) acc0 = fmaf(sc[j0 + r], tile[r * hd + e0], acc0);
            if (e1 < hd) for (int r = 0; r < rows; ++r) acc1 = fmaf(sc[j0 + r], tile[r * hd + e1], acc1);
          }
          long long ob = ((long long)head * t + i) * hd;
          if (e0 < hd) st_TIN(out, ob + e0, acc0);
          if (e1 < hd) st_TIN(out, ob + e1, acc1);
        }
        """;

    /// <summary>
    /// attention_at: <see cref="AttentionKernels.Attention"/> with past = *pastp and s = past + t keys (k, v views of the
    /// whole cache): the same source with those two values read from device memory, so the same arithmetic.
    /// </summary>
    public static string AttentionAt()
    {
        var s = AttentionKernels.Attention;
        s = Replace(s, "void attention(", "void attention_at(");
        s = Replace(s, "int past, int window, float scale) {", "const int* pastp, int window, float scale) {\n  int past = *pastp;");
        s = Replace(s, "s = dk.shape[1],", "s = past + dq.shape[1],");
        return s;
    }

    private static string Replace(string source, string what, string with) =>
        source.Contains(what, StringComparison.Ordinal) ? source.Replace(what, with, StringComparison.Ordinal)
            : throw new InvalidOperationException($"AttentionKernels.Attention no longer contains '{what}': update DecodeKernels.AttentionAt");
}
