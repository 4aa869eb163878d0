using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma3n;

/// <summary>
/// Gemma3nTextMLP under tensor parallelism: gate_proj and up_proj column-parallel ([tokens, hidden] ->
/// [tokens, intermediate/tp] each), down_proj row-parallel (all-reduced to [tokens, hidden]).
/// <c>down_proj(act_fn(gate) * up_proj(x))</c>, where a sparse layer (activation_sparsity &gt; 0) first applies
/// <c>gate = _gaussian_topk(gate_proj(x))</c>. The top-k statistics are over the WHOLE intermediate row, so under TP
/// the gate shards are all-gathered for the mean and std (a rank-local statistic would differ from HF's at TP &gt; 1).
/// </summary>
public sealed class Gemma3nMlp
{
    private readonly ColumnParallelLinear _gate, _up;
    private readonly RowParallelLinear _down;
    private readonly ActivationKind _act;
    private readonly double _sparsity;
    private readonly IProcessGroup _tp;
    private readonly bool _rankLocalStatistics;

    public Gemma3nMlp(IWeightSource weights, string prefix, Gemma3nTextSettings config, int layer, ParallelContext ctx, Gemma3nOptions? options = null)
    {
        _tp = ctx.Tp;
        _rankLocalStatistics = (options ?? Gemma3nOptions.Default).SparseTopKRankLocal;
        _gate = ColumnParallelLinear.Load(weights, prefix + ".gate_proj", ctx.Tp);
        _up = ColumnParallelLinear.Load(weights, prefix + ".up_proj", ctx.Tp);
        _down = RowParallelLinear.Load(weights, prefix + ".down_proj", ctx.Tp, inputIsParallel: true);
        _act = Activation.Parse(config.HiddenActivation);
        _sparsity = config.ActivationSparsity[layer];
    }

    /// <param name="x">[tokens, hidden]</param>
    public Tensor Forward(Tensor x)
    {
        var gate = _gate.Forward(x);                                           // [tokens, intermediate/tp]
        if (_sparsity > 0)
        {
            var full = _tp.WorldSize == 1 || _rankLocalStatistics ? gate : _tp.AllGather(gate, -1);    // [tokens, intermediate]
            gate = Activation.Apply(Elementwise.Sub(gate, GaussianTopKCutoff(full, _sparsity)), ActivationKind.Relu);
        }
        var up = _up.Forward(x);                                               // [tokens, intermediate/tp]
        return _down.Forward(Activation.ApplyGated(gate, up, _act));           // [tokens, hidden]
    }

    /// <summary>
    /// Gemma3nTextMLP._gaussian_topk's cutoff per row of <paramref name="gate"/> [.., n] -> [.., 1] in gate's dtype:
    /// <c>mean(g) + std(g, unbiased=False) * Normal(0,1).icdf(sparsity).type(g.dtype)</c>; each torch op rounds to the
    /// dtype. <c>relu(g - cutoff)</c> keeps roughly the top (1 - sparsity) of a Gaussian row. mean and std are
    /// computed in float64 per row and rounded once (torch accumulates in float/double and rounds once).
    /// </summary>
    public static Tensor GaussianTopKCutoff(Tensor gate, double sparsity)
    {
        var dt = gate.DType;
        var (mean, std) = RowStatistics.MeanStd(gate);                             // [.., 1] float32 from float64 sums
        var meanT = mean.To(dt);
        var stdT = std.To(dt);
        double multiplier = Tensor.Scalar(NormalIcdf(sparsity), dt).Item();   // std_multiplier.type(inputs.dtype)
        return Elementwise.Add(meanT, Elementwise.Mul(stdT, multiplier));
    }

    /// <summary>
    /// torch.distributions.Normal(0, 1).icdf(p) for a float32 p: <c>erfinv(2p - 1) * sqrt(2)</c> in float32 (erfinv
    /// computed in float64 on the float32 argument and rounded: torch's float32 erfinv may differ in the last bit).
    /// </summary>
    public static float NormalIcdf(double p)
    {
        float pf = (float)p;
        float arg = 2f * pf - 1f;
        float e = (float)ErfInv(arg);
        return e * (float)Math.Sqrt(2.0);
    }

    /// <summary>erfinv in float64: Giles' single-precision approximation refined by Newton steps on erf.</summary>
    public static double ErfInv(double y)
    {
        if (y <= -1) return double.NegativeInfinity;
        if (y >= 1) return double.PositiveInfinity;
        double w = -Math.Log((1.0 - y) * (1.0 + y)), x;
        if (w < 5.0)
        {
            w -= 2.5;
            double p = 2.81022636e-08;
            p = 3.43273939e-07 + p * w; p = -3.5233877e-06 + p * w; p = -4.39150654e-06 + p * w; p = 0.00021858087 + p * w;
            p = -0.00125372503 + p * w; p = -0.00417768164 + p * w; p = 0.246640727 + p * w; p = 1.50140941 + p * w;
            x = p * y;
        }
        else
        {
            w = Math.Sqrt(w) - 3.0;
            double p = -0.000200214257;
            p = 0.000100950558 + p * w; p = 0.00134934322 + p * w; p = -0.00367342844 + p * w; p = 0.00573950773 + p * w;
            p = -0.0076224613 + p * w; p = 0.00943887047 + p * w; p = 1.00167406 + p * w; p = 2.83297682 + p * w;
            x = p * y;
        }
        for (int i = 0; i < 3; i++)   // Newton: erf'(x) = 2/sqrt(pi) exp(-x^2)
            x -= (Kernels.Erf.Compute(x) - y) / (2.0 / Math.Sqrt(Math.PI) * Math.Exp(-x * x));
        return x;
    }
}
