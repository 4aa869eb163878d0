namespace Harness.Engine.Cuda.Kernels;

/// <summary>
/// Kernels of a decode step whose position lives in device memory (an int32 <c>pos</c>: the number of tokens already in
/// the KV cache), so that one CUDA graph of the step replays at every position. Each equals an eager op bit for bit.
/// </summary>
public static class DecodeKernels
{
    /// <summary>
    /// rows_at: oa[r, :] = a[pos + r, :], ob[r, :] = b[pos + r, :] for r &lt; rows (ELEM the W-byte unsigned type; a, b
    /// contiguous [P, d] tables, the cos/sin of every position): what narrowing the tables at the host's position copies.
    /// </summary>
    public const string RowsAt = """
        extern "C" __global__ void rows_at(const ELEM* a, const ELEM* b, const int* pos, ELEM* oa, ELEM* ob, int rows, int d) {
          long long base = (long long)(*pos) * d, n = (long long)rows * d;
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

    /// <summary>advance: *pos += tokens; *id = *pick (the greedy token becomes the next step's input). One thread.</summary>
    public const string Advance = """
        extern "C" __global__ void advance(int* pos, long long* id, const long long* pick, int tokens) {
          if (blockIdx.x == 0 && threadIdx.x == 0) { *pos += tokens; *id = *pick; }
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
