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
///   elementwise:  |e_i - o_i|      &lt;= Ca * max|r - o|      + Fa * u * max|o|   for all but floor(B * n) elements
///   scale bias:   |beta(e)|        &lt;= max(C * |beta(r)| + Z * sigma(e) + F * u, S * relL2(e))   beta(x) = &lt;x - o, o&gt; / &lt;o, o&gt;
/// </code>
/// u is the unit roundoff of the engine's dtype (2^-24 float32, 2^-8 bfloat16, 2^-11 float16). The constants are per
/// dtype (<see cref="For"/>), chosen from the measured distribution of a correct engine's ratios (README, "Tolerances";
/// <c>harness ratios</c> prints it). The floor covers modules where the reference's own error is exactly 0 (HF's float64
/// model still computes RMSNorm, rotary and softmax in float32, so its oracle equals the float32 reference there).
/// beta is the error's component along the oracle itself: a relative scale error (a wrong eps, a residual scale, a
/// conversion that truncates instead of rounding) that the norm-wise ratio may not see when it is smaller than the
/// noise, but that rounding noise does not make. sigma(e) is its standard error, the larger of two estimates:
/// elementwise, sqrt(sum (e_i - o_i)^2 o_i^2) / &lt;o, o&gt;, what independent noise of the engine's size would give; and
/// row-clustered, sqrt(sum_r (d_r - beta w_r)^2) / &lt;o, o&gt; over the rows r of the last dimension (d_r = &lt;e_r - o_r, o_r&gt;,
/// w_r = &lt;o_r, o_r&gt;), for errors correlated along a row: one softmax normaliser or one rounded reduction scales a
/// whole token's row, and one large row (token 0's attention output is its own value vector, larger than every average)
/// can carry the whole projection. A bias the same in every row leaves no residual there and stays visible.
/// Measured: a random model of TinyLlama-1.1B's dimensions in bf16 at TP=2 with SP (H100, transformers 5.17) had
/// beta 1.1e-3 at one layer's attention against an elementwise bound of 1.0e-3, the reference's own 7e-5: row 0's.
/// </summary>
public sealed record OracleBound(double ErrorRatio, double FloorUlps, double OutlierFraction)
{
    /// <summary>Ca: the elementwise ratio (a maximum is a noisier statistic than a norm). Default: <see cref="ErrorRatio"/>.</summary>
    public double AbsErrorRatio { get; init; } = ErrorRatio;

    /// <summary>Fa: the elementwise floor in ulps of the module's largest oracle element. Default: <see cref="FloorUlps"/>.</summary>
    public double AbsFloorUlps { get; init; } = FloorUlps;

    /// <summary>
    /// G: the scenario's precision budget, the largest geometric mean of relL2(e)/relL2(r) over its oracle-judged modules
    /// (those where the reference's own error is not 0). One module may be C times noisier; the whole run may not be.
    /// </summary>
    public double GeometricMeanRatio { get; init; } = ErrorRatio;

    /// <summary>
    /// The smallest reference's own relative L2 the norm-wise bound is scaled from: relL2(e) &lt;= C * max(relL2(r), this) + F u.
    /// 0 (the default) for a module judged on its own; a decode step's module takes the root mean square of the reference's
    /// own error over all its steps (<see cref="Runs.DecodeSteps"/>), so one step where the reference happens to land close
    /// to float64 does not make the bound a tenth of the module's noise. Measured over the catalog (correct engine, forky):
    /// relL2(e) / max(relL2(r), RMS) at decode steps, bfloat16 max 2.67 (3.84 against the step's own), float32 max 3.52 (4.44);
    /// on the GPU (H200, transformers 5.17) `gemma4/e2b-like/tp2/mixed/fp32` failed at step 3 of
    /// `layers.1.per_layer_projection` at 11.7x a step's own 4.85e-7, its margin 24 at step 2.
    /// </summary>
    public double ReferenceL2Floor { get; init; }

    /// <summary>The same for the elementwise bound: |e_i - o_i| &lt;= Ca * max(max|r - o|, this) + Fa u max|o| (a decode step: the
    /// root mean square over the module's steps of the reference's own largest error).</summary>
    public double ReferenceMaxAbsFloor { get; init; }

    /// <summary>Z: how many standard errors of independent noise the scale bias may exceed the reference's by.</summary>
    public double BiasSigmas { get; init; } = 8;

    /// <summary>
    /// S: the share of the engine's own relative L2 a bias must reach to fail on its own. The bias check is there for an
    /// error that is mostly a scale (a wrong eps, a residual scale, a truncating conversion: |beta| close to relL2(e)),
    /// hidden under the norm-wise bound; a component of a tenth of the error is judged by that bound. Measured: a random
    /// TinyLlama-1.1B-sized model in bf16 at TP=2 with SP (`compare --device cuda`) had beta 0.09 of relL2(e) at one
    /// attention per run (layers.9 on an H100, layers.13 on an H200, rows of either rank), over the 8-sigma bound.
    /// </summary>
    public double BiasShare { get; init; } = 0.25;

    /// <summary>
    /// S for an output of one row (a decode step's token, [1, 1, hidden]): the row-clustered standard error needs rows, so
    /// sigma is the elementwise one alone, which assumes independent errors; a module whose error lives in a smaller space
    /// than its width (a projection up from a narrow input: Gemma's per_layer_projection maps 256 features to the hidden
    /// size) projects onto the oracle far more than that. Measured: a random Gemma4-E2B text model in bf16
    /// (`compare --device cuda --prompt-length 64`, H100, transformers 5.17) had |beta| 0.29 of relL2(e) at step 1 of
    /// `layers.9.per_layer_projection` (relL2 1.51e-2 against the reference's own 1.47e-2), and four such cells of 954;
    /// the prefill's 64 rows of the same modules pass by 3x. A scale error (|beta| close to relL2(e)) still fails alone.
    /// </summary>
    public double SingleRowBiasShare { get; init; } = 0.5;

    /// <summary>
    /// float32: C = 10 norm-wise. A correct engine's ratio over the catalog (offline, fixtures recorded on the forky chroot):
    /// median 1.37, p99 3.0, max 7.7 (Gemma4's post_per_layer_input_norm under TP=2, explained in the README: the oracle
    /// itself runs that norm in float32 and the reference's own error there is one sample that moves 2x between runs);
    /// elementwise Ca = 16 (max 10.7); C = 10 leaves 1.3x over that maximum. The faults an fp32 scenario must catch sit at 10^3-10^6.
    /// </summary>
    public static OracleBound Float32 { get; } = new(10, 4, 1e-4) { AbsErrorRatio = 16, GeometricMeanRatio = 3 };

    /// <summary>
    /// bfloat16 (and float16): C = 3 norm-wise. Measured median 1.00 in both reference environments; max 1.71 against
    /// torch 2.14 / transformers 5.12.1 (forky) and 2.23 against torch 2.11 / transformers 5.17 (the GPU machine's venv:
    /// Gemma4 MoE TP=2's layers.1.router, 24 elements, after a layer of partial sums rounded before each reduction), so
    /// C = 2 was a false alarm there; elementwise Ca = 4 (max 2.1 and 3.2); the floors are 1/8 ulp norm-wise and one ulp of
    /// the module's largest element elementwise: where the reference is exact in bf16 (a lookup), so is a correct engine.
    /// The precision budget G = 1.4: a correct engine's per-scenario geometric mean is 1.00 at TP=1 (the engine rounds where
    /// HF rounds) and at most 1.26 under TP (partial sums rounded before each reduction); the precision-only fault
    /// rms-norm-sum-of-squares-bf16 gives 1.43 (thin on both sides: see the README).
    /// </summary>
    public static OracleBound BFloat16 { get; } = new(3, 0.125, 1e-4) { AbsErrorRatio = 4, AbsFloorUlps = 1, GeometricMeanRatio = 1.4 };

    /// <summary>
    /// The bound of a module at one decode step (<see cref="Runs.DecodeSteps"/>): the same verdict on a one-token sample,
    /// [1, 1, hidden] (8 elements for Gemma3n's per-layer gates), where both relative L2 errors are single small samples and
    /// their ratio is wider than over a prompt's rows. Measured over the catalog (correct engine, 95 scenarios, every step of
    /// every module, forky): bfloat16 relL2 ratio median 1.00, p99 2.36, max 3.84 (Gemma4 e2b-like TP=2 layers.3.self_attn
    /// at step 3), elementwise max 5.03 (Gemma3n's 8-element per_layer_input_gate); float32 max 6.10 and 7.27, inside the
    /// prefill's bound. Most of that width was the denominator: one step's sample of the reference's own error. Judged
    /// against the root mean square of the reference's own error over the module's steps (<see cref="ReferenceL2Floor"/>,
    /// set by <see cref="Runs.DecodeSteps.Judge"/>) the bfloat16 maximum is 2.67 and the float32 one 3.52, so bf16 C = 4
    /// (1.5x over it; 6 before the RMS scale), Ca = 6 (elementwise max 3.75 against the RMS of the reference's largest
    /// error, 5.03 against a step's own; 8 before); float32 the prefill's. The
    /// precision budget G is the prefill's (a correct engine's step geomean: bf16 at most 1.27, fp32 1.40). The decode-only
    /// fault decode-position-off-by-one sits at 30x (bf16) and 6e5x (fp32) the reference's own error at the first step.
    /// </summary>
    public static OracleBound ForDecodeStep(DType engineDType) =>
        engineDType is DType.BFloat16 or DType.Float16 ? BFloat16 with { ErrorRatio = 4, AbsErrorRatio = 6 } : Float32;

    /// <summary>
    /// An engine computing with rounded weights (a bf16, f16 or quantized GGUF through llama.cpp), judged against HF running
    /// the same weights (dequantized from the GGUF: the reference) with the original checkpoint in float64 as the oracle
    /// (<see cref="Judge.GgufWeights"/>): the reference's own error is then the quantization's own (the weights' rounding
    /// carried through the model), and the engine adds what it rounds besides: llama.cpp's CPU matmuls round each
    /// activation row to the weight type's dot partner (bf16 for bf16 weights, q8_0 for q8_0/q5_0, q8_K for k-quants)
    /// before the dot product. Measured on the judge tests' tiny Llama (llama.cpp 0.7.0 on this AMD EPYC, forky; random
    /// prompts of 3-12 tokens, each with 3 decode steps fed the reference's greedy tokens, the 27 mapped modules; 140
    /// prompts for the converter's bf16 and q8_0 each, 40 for llama-quantize Q4_K_M, which on hidden 96 falls back to
    /// q5_0/q8_0/f16; README, "Judging another engine"): relL2(e)/relL2(r) over the prompt's rows median 1.27, max 1.81
    /// (q8_0 layers.0.mlp.down_proj; bf16 1.65, Q4_K_M 1.07), at a decode step's one row median 1.25, max 2.38 (bf16
    /// layers.1.self_attn.o_proj; q8_0 2.26); the elementwise ratio max 2.64 over the prompt (q8_0), 3.01 at a decode step
    /// (bf16). C = 3, Ca = 4 over the prompt (1.66x and 1.5x over the maxima, as bf16's 3 and 4 are over theirs);
    /// <see cref="QuantizedDecodeStep"/> C = 4, Ca = 5 (1.68x, 1.66x). The floors are float32's (the engine's tensors).
    /// The reference's own error there: relative L2 1.5e-3 to 1.2e-2 (bf16), 4.2e-3 to 6.4e-2 (q8_0) per module.
    /// </summary>
    public static OracleBound Quantized { get; } = new(3, 4, 1e-4) { AbsErrorRatio = 4, GeometricMeanRatio = 3 };

    /// <summary>The <see cref="Quantized"/> bound at a decode step (one token's row: a single small sample, as
    /// <see cref="ForDecodeStep"/> widens bf16's).</summary>
    public static OracleBound QuantizedDecodeStep { get; } = Quantized with { ErrorRatio = 4, AbsErrorRatio = 5 };

    /// <summary>The <see cref="Quantized"/> bound of the token verdict's logprobs (TokenComparison: the engine's largest
    /// logprob error against the oracle over a prompt's steps and top-k, against C times the reference's own largest):
    /// one maximum over a few steps, a noisier statistic than a module's norm. Measured (the same prompts, 4 steps, top-5):
    /// median 1.25-1.35, max 2.98 (bf16), 2.46 (q8_0), 1.12 (Q4_K_M); C = 5 (1.68x over the maximum).</summary>
    public static OracleBound QuantizedTokens { get; } = Quantized with { ErrorRatio = 5 };

    /// <summary>The bound for an engine tensor of this dtype.</summary>
    public static OracleBound For(DType engineDType) => engineDType is DType.BFloat16 or DType.Float16 ? BFloat16 : Float32;

    /// <summary>The float32 bound (tests that do not care about the dtype).</summary>
    public static OracleBound Default => Float32;

    public static double UnitRoundoff(DType dtype) => dtype switch
    {
        DType.Float32 => Math.ScaleB(1, -24),
        DType.BFloat16 => Math.ScaleB(1, -8),
        DType.Float16 => Math.ScaleB(1, -11),
        DType.Float64 => Math.ScaleB(1, -53),
        _ => 0,
    };

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"oracle (C {ErrorRatio:G3}, elementwise {AbsErrorRatio:G3}, floor {FloorUlps:G3}/{AbsFloorUlps:G3} ulps, outliers <= {OutlierFraction:G2} of elements, bias {BiasSigmas:G3} sigma)");
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
    /// <summary>beta(e): the engine error's relative component along the oracle (a scale error; + is too large).</summary>
    public double EngineScaleBias { get; init; }

    /// <summary>beta(r): the reference's own.</summary>
    public double ReferenceScaleBias { get; init; }

    /// <summary>What |beta(e)| may be: max(C |beta(r)| + Z sigma(e) + F u, S relL2(e)).</summary>
    public double BiasBound { get; init; } = double.PositiveInfinity;

    public bool BiasPassed => !(Math.Abs(EngineScaleBias) > BiasBound);

    public bool Passed => EngineRelativeL2 <= L2Bound && Outliers <= OutlierBudget && BiasPassed;

    /// <summary>relL2(e) / relL2(r): the statistic the bound's C was chosen from (infinite where the reference is exact).</summary>
    public double ErrorRatio => ReferenceRelativeL2 > 0 ? EngineRelativeL2 / ReferenceRelativeL2 : EngineRelativeL2 == 0 ? 1 : double.PositiveInfinity;

    /// <summary>bound / observed, the smaller of the norm-wise and elementwise ones: above 1 passes, the larger the safer.</summary>
    public double Margin => Math.Min(Math.Min(Ratio(L2Bound, EngineRelativeL2), Ratio(AbsBound, EngineMaxAbs)), Ratio(BiasBound, Math.Abs(EngineScaleBias)));

    private static double Ratio(double bound, double observed) => observed == 0 ? double.PositiveInfinity : bound / observed;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"  against the float64 oracle: engine relative L2 {EngineRelativeL2:E3} (reference's own {ReferenceRelativeL2:E3}") +
        (Bound.ReferenceL2Floor > ReferenceRelativeL2 ? string.Create(CultureInfo.InvariantCulture, $", over its steps {Bound.ReferenceL2Floor:E3}") : "") +
        string.Create(CultureInfo.InvariantCulture, $", bound {L2Bound:E3}); " +
        $"engine max abs {EngineMaxAbs:E3} (reference's own {ReferenceMaxAbs:E3}, bound {AbsBound:E3}); " +
        $"{Outliers} element(s) over the bound (budget {OutlierBudget}); scale bias {EngineScaleBias:E2} (reference's own {ReferenceScaleBias:E2}, " +
        $"bound {BiasBound:E2}){(BiasPassed ? "" : " OUTSIDE")}; margin {Margin:G3}\n");

    /// <summary>Judges engine against oracle with the reference's own error as the yardstick (all three the same shape).</summary>
    public static OracleResult Judge(double[] engine, double[] reference, double[] oracle, DType engineDType, int[] shape, OracleBound? bound = null)
    {
        bound ??= OracleBound.For(engineDType);
        if (engine.Length != oracle.Length || reference.Length != oracle.Length)
            throw new ArgumentException($"oracle comparison needs equal sizes: engine {engine.Length}, reference {reference.Length}, oracle {oracle.Length}");
        double eSq = 0, rSq = 0, oSq = 0, eMax = 0, rMax = 0, oMax = 0, eDot = 0, rDot = 0, eVar = 0;
        int rowLength = shape.Length > 0 && shape[^1] > 0 ? shape[^1] : Math.Max(1, oracle.Length);
        int rows = (oracle.Length + rowLength - 1) / rowLength;
        var rowDot = new double[rows];   // d_r = <e_r - o_r, o_r>
        var rowSq = new double[rows];    // w_r = <o_r, o_r>
        for (int i = 0; i < oracle.Length; i++)
        {
            double o = oracle[i];
            if (!double.IsFinite(o)) continue;              // non-finite oracle elements are judged by the non-finite check
            double de = Math.Abs(engine[i] - o), dr = Math.Abs(reference[i] - o);
            if (!double.IsFinite(de)) de = double.PositiveInfinity;
            if (!double.IsFinite(dr)) dr = double.PositiveInfinity;
            eSq += de * de; rSq += dr * dr; oSq += o * o;
            eDot += (engine[i] - o) * o; rDot += (reference[i] - o) * o; eVar += de * de * o * o;
            rowDot[i / rowLength] += (engine[i] - o) * o; rowSq[i / rowLength] += o * o;
            eMax = Math.Max(eMax, de); rMax = Math.Max(rMax, dr); oMax = Math.Max(oMax, Math.Abs(o));
        }
        double norm = oSq > 0 ? Math.Sqrt(oSq) : 1;
        double eL2 = Math.Sqrt(eSq) / norm, rL2 = Math.Sqrt(rSq) / norm;
        double u = OracleBound.UnitRoundoff(engineDType);
        double l2Bound = bound.ErrorRatio * Math.Max(rL2, bound.ReferenceL2Floor) + bound.FloorUlps * u;
        double absBound = bound.AbsErrorRatio * Math.Max(rMax, bound.ReferenceMaxAbsFloor) + bound.AbsFloorUlps * u * oMax;
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
        // The scale bias: the error's projection on the oracle, relative; sigma is what independent noise of the engine's
        // own size would project there.
        double eBeta = oSq > 0 ? eDot / oSq : 0, rBeta = oSq > 0 ? rDot / oSq : 0;
        double clustered = 0;
        for (int r = 0; r < rows; r++)
        {
            double residual = rowDot[r] - eBeta * rowSq[r];
            clustered += residual * residual;
        }
        double sigma = oSq > 0 ? Math.Sqrt(Math.Max(eVar, double.IsFinite(clustered) ? clustered : 0)) / oSq : 0;
        double share = rows == 1 ? Math.Max(bound.BiasShare, bound.SingleRowBiasShare) : bound.BiasShare;
        double biasBound = Math.Max(bound.ErrorRatio * Math.Abs(rBeta) + bound.BiasSigmas * sigma + bound.FloorUlps * u, share * eL2);
        if (!double.IsFinite(eBeta)) eBeta = double.PositiveInfinity;
        return new OracleResult(bound, eL2, rL2, eMax, rMax, l2Bound, absBound, outliers, budget, Unravel(worst, shape))
        {
            EngineScaleBias = eBeta,
            ReferenceScaleBias = rBeta,
            BiasBound = double.IsFinite(rBeta) ? biasBound : double.PositiveInfinity,
        };
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
