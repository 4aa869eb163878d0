namespace Harness.Engine.Cuda.Kernels;

/// <summary>Lookups and gathers: rows by id (embedding, index_select), torch.gather, and the windowed copies of Gemma4
/// audio (context windows); each copies bits, no arithmetic.</summary>
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
