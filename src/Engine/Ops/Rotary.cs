using Harness.Engine.Tensors;
using K = Harness.Engine.Kernels;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// Rotary position embedding helpers in the float32 arithmetic of HF's LlamaRotaryEmbedding and modeling_rope_utils.
/// <paramref name="dim"/> everywhere is the rotary dim (head_dim, or int(head_dim * partial_rotary_factor)).
/// </summary>
public static class Rotary
{
    /// <summary>
    /// HF's default inv_freq: <c>1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))</c>, all in float32:
    /// e = float(2i) / float(dim); p = powf(float(theta), e) (here pow in double rounded once, which matched torch's
    /// for theta 1e4, 5e5, 1e6 and dims 64..256); inv = 1 / p.
    /// </summary>
    public static Tensor InvFreq(double theta, int dim)
    {
        if (dim <= 0 || dim % 2 != 0) throw new ArgumentException($"rotary dim must be positive and even, got {dim}");
        float b = (float)theta;
        var inv = new float[dim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            float e = (float)(2 * i) / dim;
            float p = (float)Math.Pow(b, e);
            inv[i] = 1f / p;
        }
        return Tensor.FromArray(inv, inv.Length);
    }

    /// <summary>rope_type "linear" (_compute_linear_scaling_rope_parameters): default inv_freq, then <c>inv_freq /= factor</c> in float32.</summary>
    public static Tensor InvFreqLinear(double theta, int dim, double factor)
    {
        var inv = InvFreq(theta, dim);
        var s = inv.Span<float>();
        float f = (float)factor;
        for (int i = 0; i < s.Length; i++) s[i] /= f;
        return inv;
    }

    /// <summary>
    /// rope_type "llama3" (_compute_llama3_parameters), each step a float32 torch op with Python scalars cast to float32:
    /// <code>
    /// low_wl = old_ctx / low_freq_factor; high_wl = old_ctx / high_freq_factor        (Python floats)
    /// wavelen = 2*pi / inv_freq                       -> inv_freq.reciprocal() * float(2*pi)   (torch's __rtruediv__)
    /// inv_l = where(wavelen &gt; low_wl, inv_freq / factor, inv_freq)
    /// smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    ///                                                 -> (wavelen.reciprocal() * old_ctx - low) / (high - low)
    /// smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    /// is_medium = !(wavelen &lt; high_wl) &amp;&amp; !(wavelen &gt; low_wl)
    /// inv = where(is_medium, smoothed, inv_l)
    /// </code>
    /// </summary>
    public static Tensor InvFreqLlama3(double theta, int dim, double factor, double lowFreqFactor, double highFreqFactor,
        int originalMaxPositionEmbeddings)
    {
        var inv = InvFreq(theta, dim);
        var s = inv.Span<float>();
        double oldCtx = originalMaxPositionEmbeddings;
        float lowWl = (float)(oldCtx / lowFreqFactor), highWl = (float)(oldCtx / highFreqFactor);
        float twoPi = (float)(2 * Math.PI), f = (float)factor, low = (float)lowFreqFactor;
        float span = (float)(highFreqFactor - lowFreqFactor), ctx = (float)oldCtx;
        for (int i = 0; i < s.Length; i++)
        {
            float v = s[i];
            float wavelen = (1f / v) * twoPi;
            float invL = wavelen > lowWl ? v / f : v;
            float smooth = ((1f / wavelen) * ctx - low) / span;
            float smoothed = (1f - smooth) * invL / f + smooth * invL;
            bool medium = !(wavelen < highWl) && !(wavelen > lowWl);
            s[i] = medium ? smoothed : invL;
        }
        return inv;
    }

    /// <summary>
    /// cos and sin for positions, as LlamaRotaryEmbedding.forward: freqs = inv_freq[None, :, None] @ position_ids[:, None, :]
    /// (a K=1 product: one float32 multiply inv[j] * float(pos)), emb = cat(freqs, freqs), cos = emb.cos() * attention_scaling,
    /// sin likewise, then cast to <paramref name="dtype"/>. cos/sin here are correctly rounded (double, rounded once);
    /// torch's vectorized Sleef cosf/sinf (1 ulp) can differ in the last bit.
    /// </summary>
    /// <param name="positionIds">[batch, seq] or [seq] integer positions.</param>
    /// <returns>[batch, seq, dim] tensors (batch 1 for 1D ids).</returns>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor invFreq, Tensor positionIds, DType dtype, double attentionScaling = 1.0)
    {
        if (positionIds.Rank == 1) positionIds = positionIds.Unsqueeze(0);
        if (positionIds.Rank != 2) throw new ArgumentException($"position_ids must be [batch, seq] or [seq], got {Shape.Format(positionIds.Shape)}");
        var inv = OpSupport.Float32Contiguous(invFreq).Span<float>().ToArray();
        var pos = positionIds.ToInt64Array();
        int b = positionIds.Size(0), s = positionIds.Size(1), half = inv.Length, d = 2 * half;
        var cos = Tensor.Zeros(DType.Float32, b, s, d);
        var sin = Tensor.Zeros(DType.Float32, b, s, d);
        var cs = cos.Span<float>();
        var ss = sin.Span<float>();
        float scale = (float)attentionScaling;
        for (int r = 0; r < b * s; r++)
        {
            float p = pos[r];
            for (int j = 0; j < half; j++)
            {
                float f = inv[j] * p;
                float c = (float)Math.Cos(f) * scale, sn = (float)Math.Sin(f) * scale;
                cs[r * d + j] = c; cs[r * d + half + j] = c;
                ss[r * d + j] = sn; ss[r * d + half + j] = sn;
            }
        }
        return (OpSupport.FromFloat32(cos, dtype), OpSupport.FromFloat32(sin, dtype));
    }

    /// <summary>rotate_half: cat(-x[..., d/2:], x[..., :d/2]) along the last dim.</summary>
    public static Tensor RotateHalf(Tensor x)
    {
        OpSupport.RequireFloat(x, "rotate_half");
        int d = x.Size(-1);
        if (d % 2 != 0) throw new ArgumentException($"rotate_half: last dim must be even, got shape {Shape.Format(x.Shape)}");
        return OpBackend.Of(x).RotateHalf(x);
    }

    /// <summary>
    /// apply_rotary_pos_emb for one tensor: cos/sin are unsqueezed at <paramref name="unsqueezeDim"/> and broadcast to q;
    /// q_embed = (q * cos) + (rotate_half(q) * sin), with each of the three torch ops rounded to the dtype.
    /// </summary>
    public static Tensor Apply(Tensor q, Tensor cos, Tensor sin, int unsqueezeDim = 1)
    {
        var dt = OpSupport.ResultType(q, cos, "apply_rotary_pos_emb");
        OpSupport.ResultType(q, sin, "apply_rotary_pos_emb");
        var c = cos.Unsqueeze(unsqueezeDim);
        var s = sin.Unsqueeze(unsqueezeDim);
        var shape = OpSupport.Broadcast(q, c, s);
        if (!Shape.SequenceEqual(shape, q.Shape))
            throw new ArgumentException(
                $"apply_rotary_pos_emb: cos/sin {Shape.Format(c.Shape)} do not broadcast to q {Shape.Format(q.Shape)}");
        int d = q.Size(-1);
        if (d % 2 != 0) throw new ArgumentException($"apply_rotary_pos_emb: head dim must be even, got shape {Shape.Format(q.Shape)}");
        return OpBackend.Of(q).Rope(q, c, s, dt, shape);
    }
}

/// <summary>The host's rotary ops: float32 rows (<see cref="K.Rotary"/>), each torch op's rounding reproduced.</summary>
internal sealed partial class HostOps
{
    public Tensor RotateHalf(Tensor x)
    {
        int d = x.Size(-1);
        var f = OpSupport.Float32Contiguous(x);
        var y = Tensor.Zeros(DType.Float32, x.ShapeArray);
        var src = f.Span<float>();
        var dst = y.Span<float>();
        for (int r = 0; r < f.NumEl / Math.Max(d, 1); r++) K.Rotary.RotateHalf(src.Slice(r * d, d), dst.Slice(r * d, d));
        return OpSupport.FromFloat32(y, x.DType); // negation and moves are exact
    }

    public Tensor Rope(Tensor q, Tensor c, Tensor s, DType dt, int[] shape)
    {
        int d = q.Size(-1);
        var qf = OpSupport.Float32Contiguous(q);
        var cf = OpSupport.Float32Contiguous(c).Expand(shape);
        var sf = OpSupport.Float32Contiguous(s).Expand(shape);
        var y = Tensor.Zeros(DType.Float32, shape);
        var w = new RowWalker(shape, cf, sf);
        var qs = qf.Span<float>();
        var ys = y.Span<float>();
        var cst = cf.StorageSpan<float>();
        var sst = sf.StorageSpan<float>();
        for (int r = 0; r < w.Rows; r++, w.Next())
            K.Rotary.ApplyRow(qs.Slice(r * d, d), cst.Slice(w.Offsets[0], d), sst.Slice(w.Offsets[1], d), ys.Slice(r * d, d), dt);
        return OpSupport.FromFloat32(y, dt);
    }
}
