using Harness.Engine.Tensors;

namespace Harness.Engine.Cuda;

/// <summary>
/// Shared CUDA C++ for the run-time compiled kernels: the strided-view descriptor, and loads/stores per dtype that widen
/// to float32 and round back (round-to-nearest-even, NaN kept), written without CUDA headers so NVRTC needs none.
/// A kernel template names its element types with the tokens TIN / TOUT / TW; <see cref="Instantiate"/> substitutes
/// f32, bf16 or f16 (ld_TIN becomes ld_bf16, and so on).
/// </summary>
public static class CudaSource
{
    public const string Prelude = """
        struct Desc { int rank; int shape[8]; long long strides[8]; long long offset; };
        // Storage offset (elements, relative to the view's first element) of the i-th element in row-major order.
        __device__ __forceinline__ long long desc_offset(const Desc& d, long long i) {
          long long off = d.offset;
          for (int k = d.rank - 1; k >= 0; --k) { long long s = d.shape[k]; long long ix = i % s; i /= s; off += ix * d.strides[k]; }
          return off;
        }
        __device__ __forceinline__ float bf16_to_f(unsigned short h) { return __uint_as_float(((unsigned)h) << 16); }
        __device__ __forceinline__ unsigned short f_to_bf16(float f) {
          unsigned u = __float_as_uint(f);
          if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
          u += 0x7fffu + ((u >> 16) & 1u);
          return (unsigned short)(u >> 16);
        }
        __device__ __forceinline__ float f16_to_f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
        __device__ __forceinline__ unsigned short f_to_f16(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
        __device__ __forceinline__ float ld_f32(const void* p, long long i) { return ((const float*)p)[i]; }
        __device__ __forceinline__ float ld_bf16(const void* p, long long i) { return bf16_to_f(((const unsigned short*)p)[i]); }
        __device__ __forceinline__ float ld_f16(const void* p, long long i) { return f16_to_f(((const unsigned short*)p)[i]); }
        __device__ __forceinline__ void st_f32(void* p, long long i, float v) { ((float*)p)[i] = v; }
        __device__ __forceinline__ void st_bf16(void* p, long long i, float v) { ((unsigned short*)p)[i] = f_to_bf16(v); }
        __device__ __forceinline__ void st_f16(void* p, long long i, float v) { ((unsigned short*)p)[i] = f_to_f16(v); }
        // Rounds a float32 value to the dtype and back (what storing and reloading does).
        __device__ __forceinline__ float rnd_f32(float v) { return v; }
        __device__ __forceinline__ float rnd_bf16(float v) { return bf16_to_f(f_to_bf16(v)); }
        __device__ __forceinline__ float rnd_f16(float v) { return f16_to_f(f_to_f16(v)); }
        // Block-wide sum and max over blockDim.x threads (a multiple of 32, at most 1024): warp butterflies, then warp 0
        // over the per-warp results. The order depends on blockDim alone, never on which row or how many rows.
        __device__ __forceinline__ float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
        __device__ __forceinline__ float warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }
        __device__ float block_sum(float v, float* sh) {
          int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
          v = warp_sum(v);
          __syncthreads();
          if (lane == 0) sh[w] = v;
          __syncthreads();
          v = lane < nw ? sh[lane] : 0.0f;
          v = warp_sum(v);
          return v;
        }
        __device__ float block_max(float v, float* sh) {
          int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
          v = warp_max(v);
          __syncthreads();
          if (lane == 0) sh[w] = v;
          __syncthreads();
          v = lane < nw ? sh[lane] : -__int_as_float(0x7f800000);
          v = warp_max(v);
          return v;
        }

        """;

    /// <summary>The token a dtype is written as in kernel templates: f32, bf16, f16.</summary>
    public static string Token(DType dtype) => dtype switch
    {
        DType.Float32 => "f32",
        DType.BFloat16 => "bf16",
        DType.Float16 => "f16",
        _ => throw new NotSupportedException($"CUDA float kernels take float32, bfloat16 or float16, not {dtype.TorchName()}"),
    };

    /// <summary>Prelude + template with TIN, TOUT and TW replaced by dtype tokens.</summary>
    public static string Instantiate(string template, DType tin, DType? tout = null, DType? tw = null)
    {
        var s = template.Replace("TIN", Token(tin)).Replace("TOUT", Token(tout ?? tin));
        if (tw is { } w) s = s.Replace("TW", Token(w));
        return Prelude + s;
    }
}
