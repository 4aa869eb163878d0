namespace Harness.Engine.Cuda.Kernels;

/// <summary>One element-wise expression on float32 values a (and b), written as CUDA C; the result rounds once to the output dtype.</summary>
public interface ICudaElementwiseOp
{
    /// <summary>Kernel-name suffix, e.g. "silu".</summary>
    static abstract string Name { get; }
    /// <summary>A CUDA C expression of float a (and float b, float s for a scalar) giving a float.</summary>
    static abstract string Expression { get; }
}

// Activations (HF ACT2FN), each the float32 formula of torch's CPU/GPU kernel, one rounding to the dtype.
public struct GeluExactOp : ICudaElementwiseOp { public static string Name => "gelu"; public static string Expression => "0.5f * a * (1.0f + erff(a * 0.70710678118654752f))"; }
public struct GeluTanhOp : ICudaElementwiseOp { public static string Name => "gelu_tanh"; public static string Expression => "0.5f * a * (1.0f + tanhf(0.7978845608028654f * (a + 0.044715f * a * a * a)))"; }
public struct SiluOp : ICudaElementwiseOp { public static string Name => "silu"; public static string Expression => "a / (1.0f + expf(-a))"; }
public struct QuickGeluOp : ICudaElementwiseOp { public static string Name => "quick_gelu"; public static string Expression => "a * (1.0f / (1.0f + expf(-1.702f * a)))"; }
public struct ReluOp : ICudaElementwiseOp { public static string Name => "relu"; public static string Expression => "(a > 0.0f ? a : (a != a ? a : 0.0f))"; }
public struct NegOp : ICudaElementwiseOp { public static string Name => "neg"; public static string Expression => "-a"; }
public struct ExpOp : ICudaElementwiseOp { public static string Name => "exp"; public static string Expression => "expf(a)"; }
// Binary ops (b broadcast by stride 0).
public struct AddOp : ICudaElementwiseOp { public static string Name => "add"; public static string Expression => "a + b"; }
public struct SubOp : ICudaElementwiseOp { public static string Name => "sub"; public static string Expression => "a - b"; }
public struct MulOp : ICudaElementwiseOp { public static string Name => "mul"; public static string Expression => "a * b"; }
public struct DivOp : ICudaElementwiseOp { public static string Name => "div"; public static string Expression => "a / b"; }
// Scalar ops: s is a float32 kernel argument.
public struct AddScalarOp : ICudaElementwiseOp { public static string Name => "add_scalar"; public static string Expression => "a + s"; }
public struct MulScalarOp : ICudaElementwiseOp { public static string Name => "mul_scalar"; public static string Expression => "a * s"; }

// Math, clamps, pow and the NaN-propagating maximum/minimum (each the float32 formula of the engine's CPU kernel, one
// rounding to the output dtype).
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
/// Element-wise kernels over strided views (llm.c style: each states its contract and the naive loop it equals).
/// </summary>
public static class ElementwiseKernels
{
    /// <summary>
    /// copy: out[desc_out(i)] = cast(in[desc_in(i)]) for i in [0, n): any strides on both sides, same shape, one rounding.
    /// Same dtype copies move bits (ints included) through the W-byte unsigned type.
    /// </summary>
    public const string CopyConvert = """
        extern "C" __global__ void copy_convert(const void* in, Desc din, void* out, Desc dout, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
            st_TOUT(out, desc_offset(dout, i), ld_TIN(in, desc_offset(din, i)));
        }
        """;

    public const string CopyBits = """
        extern "C" __global__ void copy_bits(const ELEM* in, Desc din, ELEM* out, Desc dout, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
            out[desc_offset(dout, i)] = in[desc_offset(din, i)];
        }
        """;

    /// <summary>unary: out[i] = OP(float(x[desc_x(i)])) rounded to TOUT, out contiguous [n].</summary>
    public const string Unary = """
        extern "C" __global__ void unary_NAME(const void* x, Desc dx, void* out, float s, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            float a = ld_TIN(x, desc_offset(dx, i));
            st_TOUT(out, i, (EXPR));
          }
        }
        """;

    /// <summary>
    /// binary: out[i] = OP(float(a[desc_a(i)]), float(b[desc_b(i)])) rounded to TOUT; a and b are views already expanded
    /// to out's shape (broadcast dims have stride 0); out contiguous [n]. Inputs of one dtype (TIN) or a mixed TW for b.
    /// </summary>
    public const string Binary = """
        extern "C" __global__ void binary_NAME(const void* pa, Desc da, const void* pb, Desc db, void* out, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            float a = ld_TIN(pa, desc_offset(da, i));
            float b = ld_TW(pb, desc_offset(db, i));
            st_TOUT(out, i, (EXPR));
          }
        }
        """;

    /// <summary>
    /// gated: out[r, j] = rnd(rnd(ACT(gate[r, j])) * up[r, j]) for HF's act(gate) * up: the activation rounds to the dtype,
    /// the product rounds again (two torch ops). gate and up strided [rows, d] views, out contiguous [rows, d].
    /// </summary>
    public const string Gated = """
        extern "C" __global__ void gated_NAME(const void* g, Desc dg, const void* u, Desc du, void* out, long long n) {
          for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            float a = ld_TIN(g, desc_offset(dg, i));
            float act = rnd_TIN((EXPR));
            st_TIN(out, i, act * ld_TIN(u, desc_offset(du, i)));
          }
        }
        """;

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
}
