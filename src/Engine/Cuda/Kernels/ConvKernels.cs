namespace Harness.Engine.Cuda.Kernels;

/// <summary>
/// Convolutions of the Gemma4 towers: the im2col of the vision tower's 3x3 stride-2 conv (its GEMM runs in cuBLAS) and the
/// audio tower's depthwise causal conv1d. Each states its shape contract and the naive loop it equals (llm.c style).
/// </summary>
public static class ConvKernels
{
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
}
