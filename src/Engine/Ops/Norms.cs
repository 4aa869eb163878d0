using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// The RMSNorm variants of HF's model classes. All share the float32 core (h = x.float(); ms = mean(h*h) over the last dim;
/// n = h * (1 / sqrt(ms + eps)), eps cast to float32); they differ in where the weight is applied and where the cast happens.
/// </summary>
public enum RmsNormKind
{
    /// <summary>
    /// LlamaRMSNorm (also Qwen2VLRMSNorm / Qwen2RMSNorm, T5LayerNorm):
    /// <c>h = x.to(float32); var = h.pow(2).mean(-1, keepdim=True); h = h * torch.rsqrt(var + eps); return weight * h.to(input_dtype)</c>.
    /// The normalized value is rounded to the input dtype BEFORE the weight multiply, which rounds again;
    /// the output dtype is torch's promotion of weight and input dtypes (bf16 x with fp32 weight gives fp32).
    /// </summary>
    Llama,

    /// <summary>
    /// Gemma3RMSNorm (and GemmaRMSNorm / Gemma2RMSNorm): weight stored as an offset from 1 (initialised to zeros):
    /// <c>out = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps); out = out * (1.0 + weight.float()); return out.type_as(x)</c>.
    /// All in float32, one cast at the end.
    /// </summary>
    GemmaOnePlusWeight,

    /// <summary>
    /// Gemma3nRMSNorm / Gemma4RMSNorm with with_scale=True (weight initialised to ones, multiplied as is):
    /// <c>ms = h.pow(2).mean(-1, keepdim=True) + eps; out = h * torch.pow(ms, -0.5); out = out * weight.float(); return out.type_as(x)</c>.
    /// torch's CPU pow(t, -0.5) is 1/sqrt(t), so the core equals Llama's; the weight multiply stays in float32, one cast.
    /// </summary>
    GemmaScaled,

    /// <summary>
    /// Gemma3nRMSNorm / Gemma4RMSNorm with with_scale=False (no weight at all):
    /// <c>out = h * torch.pow(h.pow(2).mean(-1, keepdim=True) + eps, -0.5); return out.type_as(x)</c>.
    /// </summary>
    GemmaNoScale,
}

/// <summary>RMSNorm (all HF variants) and LayerNorm over the last dim.</summary>
public static class Norms
{
    /// <summary>
    /// RMSNorm over the last dim. <paramref name="weight"/>: 1D of the last dim's size; null only for <see cref="RmsNormKind.GemmaNoScale"/>.
    /// Batch-invariant mode uses the fixed-order sum of squares.
    /// </summary>
    public static Tensor RmsNorm(Tensor x, Tensor? weight, double eps, RmsNormKind kind = RmsNormKind.Llama)
    {
        OpSupport.RequireFloat(x, "rms_norm");
        int n = x.Rank == 0 ? 1 : x.Size(-1);
        if (kind == RmsNormKind.GemmaNoScale)
        {
            if (weight is not null) throw new ArgumentException("rms_norm: GemmaNoScale (with_scale=False) takes no weight");
        }
        else
        {
            if (weight is null) throw new ArgumentException($"rms_norm: {kind} needs a weight of size {n}");
            CheckParam(weight, n, "weight", x);
        }
        return OpBackend.Of(x).RmsNorm(x, weight, (float)eps, kind);
    }

    /// <summary>
    /// vLLM's fused residual add + LlamaRMSNorm on the host, one pass over each row:
    /// <code>
    /// residualOut = round(x + residual)                                  (torch's add in the dtype)
    /// normedOut   = round_out(weight * round(h * 1/sqrt(mean(h*h) + eps)))   h = residualOut in float32
    /// </code>
    /// the same arithmetic as <c>Elementwise.Add</c> then <see cref="RmsNorm"/> (<see cref="RmsNormKind.Llama"/>), bit for
    /// bit in both modes (the row's sum of squares is <see cref="K.RmsNorm.Row"/>, batch-invariant order when that mode is
    /// on). Without <paramref name="x"/> it is the plain norm: normedOut = RmsNorm(residual).
    /// Shapes: x (optional), residual, residualOut (optional), normedOut all [rows, n] contiguous (residualOut may be
    /// residual itself, or x: rows are read before they are written); x, residual, residualOut of one dtype; weight [n];
    /// normedOut in torch's promotion of weight and input dtypes (the input's when they agree, else float32).
    /// </summary>
    public static void AddRmsNormInto(Tensor? x, Tensor residual, Tensor weight, double eps, Tensor? residualOut, Tensor normedOut)
    {
        OpSupport.RequireFloat(residual, "add_rms_norm");
        int n = residual.Size(-1), rows = n == 0 ? 0 : residual.NumEl / n;
        CheckParam(weight, n, "weight", residual);
        var outDt = weight.DType != residual.DType ? DType.Float32 : residual.DType;
        if (!OpBackend.OnHost(residual) || !residual.IsContiguous || !normedOut.IsContiguous || normedOut.DType != outDt
            || !Shape.SequenceEqual(normedOut.Shape, residual.Shape)
            || x is not null && (x.DType != residual.DType || !x.IsContiguous || !Shape.SequenceEqual(x.Shape, residual.Shape))
            || residualOut is not null && (residualOut.DType != residual.DType || !residualOut.IsContiguous || !Shape.SequenceEqual(residualOut.Shape, residual.Shape))
            || residual.DType is not (DType.Float32 or DType.BFloat16) || weight.DType is not (DType.Float32 or DType.BFloat16)
            || !weight.IsContiguous)
            throw new ArgumentException(
                $"add_rms_norm: x {(x is null ? "none" : Shape.Format(x.Shape) + " " + x.DType.TorchName())}, residual {Shape.Format(residual.Shape)} " +
                $"{residual.DType.TorchName()}, outputs {(residualOut is null ? "none" : Shape.Format(residualOut.Shape))} and {Shape.Format(normedOut.Shape)} " +
                $"{normedOut.DType.TorchName()}: host float32/bfloat16 [rows, {n}] contiguous tensors, normed in {outDt.TorchName()}");
        if (x is not null && residualOut is null) throw new ArgumentException("add_rms_norm: a residual add needs residualOut");
        var args = new AddNormArgs(x, residual, weight, (float)eps, residualOut, normedOut, n, ComputeSettings.BatchInvariant);
        if (ComputeSettings.Threads <= 1 || rows < 2 || (long)rows * n < K.RowParallel.MinParallelElements)
            for (int r = 0; r < rows; r++) AddNormRow(args, r);
        else AddNormRows(args, rows);
    }

    private readonly record struct AddNormArgs(Tensor? X, Tensor Residual, Tensor Weight, float Eps, Tensor? ResidualOut, Tensor NormedOut, int N, bool Invariant);

    private static void AddNormRows(AddNormArgs a, int rows) =>
        K.RowParallel.For(rows, a.N, ComputeSettings.Threads, r => AddNormRow(a, r));

    [ThreadStatic] private static float[]? _normScratch;

    private static void AddNormRow(AddNormArgs a, int r)
    {
        int n = a.N;
        var scratch = _normScratch is { } s0 && s0.Length >= 3 * n ? s0 : _normScratch = new float[Math.Max(3 * n, 4096)];
        var h = scratch.AsSpan(0, n);
        var y = scratch.AsSpan(n, n);
        var w = scratch.AsSpan(2 * n, n);
        var inDt = a.Residual.DType;
        Attention.Load(a.Residual, a.Residual.Offset + r * n, h);
        if (a.X is not null)
        {
            Attention.Load(a.X, a.X.Offset + r * n, y);
            System.Numerics.Tensors.TensorPrimitives.Add(y, h, h);
            Attention.Store(h, a.ResidualOut!, a.ResidualOut!.Offset + r * n);   // rounds to the dtype ...
            K.Rounding.InPlace(h, inDt);                                           // ... and the norm reads the rounded sum
        }
        K.RmsNorm.Row(h, y, a.Eps, a.Invariant);
        K.Rounding.InPlace(y, inDt);
        Attention.Load(a.Weight, a.Weight.Offset, w);
        System.Numerics.Tensors.TensorPrimitives.Multiply(y, w, y);
        Attention.Store(y, a.NormedOut, a.NormedOut.Offset + r * n);
    }

    /// <summary>
    /// torch.nn.functional.layer_norm over the last dim (nn.LayerNorm, as in Qwen2-VL's vision blocks): weight and bias optional.
    /// Arithmetic of aten's CPU kernel: see <see cref="K.LayerNorm"/>. bf16/fp16 inputs are computed in float32 with
    /// float32 copies of weight/bias and rounded once.
    /// </summary>
    public static Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, double eps = 1e-5)
    {
        OpSupport.RequireFloat(x, "layer_norm");
        int n = x.Rank == 0 ? 1 : x.Size(-1);
        if (weight is not null) CheckParam(weight, n, "weight", x);
        if (bias is not null) CheckParam(bias, n, "bias", x);
        return OpBackend.Of(x).LayerNorm(x, weight, bias, eps);
    }

    private static void CheckParam(Tensor p, int n, string name, Tensor x)
    {
        if (p.Rank != 1 || p.Size(0) != n)
            throw new ArgumentException(
                $"norm {name} of shape {Shape.Format(p.Shape)} does not match the normalized shape [{n}] of input {Shape.Format(x.Shape)}");
        OpSupport.RequireFloat(p, $"norm {name}");
    }
}

/// <summary>The host's norms: float32 rows (<see cref="RowWise"/>), rounded where HF's classes round.</summary>
internal sealed partial class HostOps
{
    public Tensor RmsNorm(Tensor x, Tensor? weight, float feps, RmsNormKind kind)
    {
        float[]? w = weight is null ? null : OpSupport.Float32Contiguous(weight).Span<float>().ToArray();
        if (kind == RmsNormKind.GemmaOnePlusWeight)
            for (int i = 0; i < w!.Length; i++) w[i] = 1f + w[i];
        var inDType = x.DType;
        var outDType = kind == RmsNormKind.Llama && weight!.DType != inDType ? DType.Float32 : inDType;
        return Ops.RowWise.Apply(x, outDType, (row, y, invariant) =>
        {
            K.RmsNorm.Row(row, y, feps, invariant);
            switch (kind)
            {
                case RmsNormKind.Llama:
                    K.Rounding.InPlace(y, inDType);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(y, w, y);
                    break;
                case RmsNormKind.GemmaOnePlusWeight:
                case RmsNormKind.GemmaScaled:
                    System.Numerics.Tensors.TensorPrimitives.Multiply(y, w, y);
                    break;
            }
        });
    }

    public Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, double eps)
    {
        float[] g = weight is null ? [] : OpSupport.Float32Contiguous(weight).Span<float>().ToArray();
        float[] b = bias is null ? [] : OpSupport.Float32Contiguous(bias).Span<float>().ToArray();
        float feps = (float)eps;
        return Ops.RowWise.Apply(x, x.DType, (row, y, invariant) => K.LayerNorm.Row(row, g, b, y, feps, invariant));
    }
}
