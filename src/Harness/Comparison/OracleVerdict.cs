using System.Globalization;
using Harness.Engine.Tensors;

namespace Harness.Comparison;

/// <summary>
/// The verdict that scales: the engine's error is judged against the reference's OWN error, both measured against a
/// float64 oracle (the same HF model with its weights and inputs upcast to float64, capturing the same modules).
///
/// For one module, with o the oracle, r the reference (HF at the scenario's dtype) and e the engine:
/// <code>
///   norm-wise:    relL2(e, o)      &lt;= C * relL2(r, o)      + F * u
///   elementwise:  |e_i - o_i|      &lt;= C * max|r - o|       + F * u * max|o|   for all but floor(B * n) elements
/// </code>
/// u is the unit roundoff of the engine's dtype (2^-24 float32, 2^-8 bfloat16, 2^-11 float16). C, F and B are the
/// same for every model, layout and dtype (<see cref="Default"/>). The engine may be a few times noisier than the
/// reference (another summation order, partial sums rounded before a TP reduction), never orders of magnitude: bugs
/// are. The floor covers modules where the reference's own error is exactly 0 (HF's float64 model still computes
/// RMSNorm, rotary and softmax in float32, so its oracle equals the float32 reference there).
/// </summary>
public sealed record OracleBound(double ErrorRatio, double FloorUlps, double OutlierFraction)
{
    /// <summary>
    /// C = 16: measured engine/reference error ratios on the 155M Llama (fp32, TP=1): 1.9-2.2x in relative L2, 1.6-3.4x
    /// in max abs; across the catalog the largest is Gemma4's per-layer-input norm at TP=2 (7.7x relative L2, 10.7x max
    /// abs: a norm of a small-magnitude vector amplifies the engine's upstream TP reduction order). 16 covers that with
    /// room; the smallest fault the catalog must catch (exact vs tanh GELU in fp32) is ~10^3 times the fp32 reference's
    /// own error, and the bugs sit at 10^4-10^6.
    /// F = 4 ulps of the module's scale: where the reference is exact, 4 roundings of the largest element.
    /// B = 1e-4: one element in 10,000 may exceed the elementwise bound (counted and reported), never in small tensors.
    /// </summary>
    public static OracleBound Default { get; } = new(16, 4, 1e-4);

    public static double UnitRoundoff(DType dtype) => dtype switch
    {
        DType.Float32 => Math.ScaleB(1, -24),
        DType.BFloat16 => Math.ScaleB(1, -8),
        DType.Float16 => Math.ScaleB(1, -11),
        DType.Float64 => Math.ScaleB(1, -53),
        _ => 0,
    };

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"oracle (C {ErrorRatio:G3}, floor {FloorUlps:G3} ulps, outliers <= {OutlierFraction:G2} of elements)");
}

/// <summary>One module judged against the float64 oracle: both sides' errors, the bounds and the margin.</summary>
public sealed record OracleResult(
    OracleBound Bound,
    double EngineRelativeL2,
    double ReferenceRelativeL2,
    double EngineMaxAbs,
    double ReferenceMaxAbs,
    double L2Bound,
    double AbsBound,
    long Outliers,
    long OutlierBudget,
    int[] WorstIndex)
{
    public bool Passed => EngineRelativeL2 <= L2Bound && Outliers <= OutlierBudget;

    /// <summary>bound / observed, the smaller of the norm-wise and elementwise ones: above 1 passes, the larger the safer.</summary>
    public double Margin => Math.Min(Ratio(L2Bound, EngineRelativeL2), Ratio(AbsBound, EngineMaxAbs));

    private static double Ratio(double bound, double observed) => observed == 0 ? double.PositiveInfinity : bound / observed;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"  against the float64 oracle: engine relative L2 {EngineRelativeL2:E3} (reference's own {ReferenceRelativeL2:E3}, bound {L2Bound:E3}); " +
        $"engine max abs {EngineMaxAbs:E3} (reference's own {ReferenceMaxAbs:E3}, bound {AbsBound:E3}); " +
        $"{Outliers} element(s) over the bound (budget {OutlierBudget}); margin {Margin:G3}\n");

    /// <summary>Judges engine against oracle with the reference's own error as the yardstick (all three the same shape).</summary>
    public static OracleResult Judge(double[] engine, double[] reference, double[] oracle, DType engineDType, int[] shape, OracleBound? bound = null)
    {
        bound ??= OracleBound.Default;
        if (engine.Length != oracle.Length || reference.Length != oracle.Length)
            throw new ArgumentException($"oracle comparison needs equal sizes: engine {engine.Length}, reference {reference.Length}, oracle {oracle.Length}");
        double eSq = 0, rSq = 0, oSq = 0, eMax = 0, rMax = 0, oMax = 0;
        for (int i = 0; i < oracle.Length; i++)
        {
            double o = oracle[i];
            if (!double.IsFinite(o)) continue;              // non-finite oracle elements are judged by the non-finite check
            double de = Math.Abs(engine[i] - o), dr = Math.Abs(reference[i] - o);
            if (!double.IsFinite(de)) de = double.PositiveInfinity;
            if (!double.IsFinite(dr)) dr = double.PositiveInfinity;
            eSq += de * de; rSq += dr * dr; oSq += o * o;
            eMax = Math.Max(eMax, de); rMax = Math.Max(rMax, dr); oMax = Math.Max(oMax, Math.Abs(o));
        }
        double norm = oSq > 0 ? Math.Sqrt(oSq) : 1;
        double eL2 = Math.Sqrt(eSq) / norm, rL2 = Math.Sqrt(rSq) / norm;
        double u = OracleBound.UnitRoundoff(engineDType);
        double l2Bound = bound.ErrorRatio * rL2 + bound.FloorUlps * u;
        double absBound = bound.ErrorRatio * rMax + bound.FloorUlps * u * oMax;
        long outliers = 0;
        int worst = 0;
        double worstExcess = -1;
        for (int i = 0; i < oracle.Length; i++)
        {
            if (!double.IsFinite(oracle[i])) continue;
            double de = Math.Abs(engine[i] - oracle[i]);
            if (!(de <= absBound)) outliers++;
            double excess = double.IsFinite(de) ? de : double.PositiveInfinity;
            if (excess > worstExcess) { worstExcess = excess; worst = i; }
        }
        long budget = (long)Math.Floor(bound.OutlierFraction * oracle.Length);
        return new OracleResult(bound, eL2, rL2, eMax, rMax, l2Bound, absBound, outliers, budget, Unravel(worst, shape));
    }

    internal static int[] Unravel(int flat, int[] shape)
    {
        var idx = new int[shape.Length];
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            if (shape[d] == 0) return idx;
            idx[d] = flat % shape[d];
            flat /= shape[d];
        }
        return idx;
    }
}
