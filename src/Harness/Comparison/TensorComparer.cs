using Harness.Engine.Tensors;

namespace Harness.Comparison;

/// <summary>
/// Compares an engine tensor with a reference tensor under a tolerance policy and, when the float64 oracle's tensor is
/// given, judges it by <see cref="OracleResult"/> instead (the policy's allclose counts stay in the result as information).
/// Before any tolerance: an engine NaN or Inf where the reference does not hold the same value is a failure of its own.
/// </summary>
public static class TensorComparer
{
    /// <param name="bound">The oracle verdict's bound (null: <see cref="OracleBound.For"/> the engine's dtype).</param>
    public static ComparisonResult Compare(string what, Tensor actual, Tensor expected, TolerancePolicy? policy = null, Tensor? oracle = null,
        OracleBound? bound = null)
    {
        policy ??= Tolerances.For(expected.DType);
        if (!actual.Shape.SequenceEqual(expected.Shape))
            return new ComparisonResult(what, actual.ShapeArray, expected.ShapeArray, actual.DType, expected.DType, policy,
                double.NaN, double.NaN, [], double.NaN, double.NaN, Math.Max(actual.NumEl, expected.NumEl), Math.Max(actual.NumEl, expected.NumEl), double.NaN);

        var a = actual.ToDoubleArray();
        var e = expected.ToDoubleArray();
        long nonFinite = 0;
        int firstNonFinite = -1;
        for (int i = 0; i < a.Length; i++)
            if (!double.IsFinite(a[i]) && !(a[i] == e[i] || (double.IsNaN(a[i]) && double.IsNaN(e[i]))))
            {
                nonFinite++;
                if (firstNonFinite < 0) firstNonFinite = i;
            }
        OracleResult? judged = null;
        if (oracle is not null)
        {
            if (!oracle.Shape.SequenceEqual(expected.Shape))
                throw new ArgumentException($"{what}: the oracle's shape {Shape.Format(oracle.Shape)} differs from the reference's {Shape.Format(expected.Shape)}");
            judged = OracleResult.Judge(a, e, oracle.ToDoubleArray(), actual.DType, expected.ShapeArray, bound);
        }
        double maxAbs = 0, maxRel = 0, worstExcess = -1, diffSq = 0, refSq = 0;
        int worst = 0;
        long mismatches = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs(a[i] - e[i]);
            if (!policy.Accepts(a[i], e[i])) mismatches++;
            if (double.IsFinite(d))
            {
                maxAbs = Math.Max(maxAbs, d);
                if (e[i] != 0) maxRel = Math.Max(maxRel, d / Math.Abs(e[i]));
                else if (d != 0) maxRel = double.PositiveInfinity;
                diffSq += d * d;
                refSq += e[i] * e[i];
            }
            else if (!(double.IsNaN(a[i]) && double.IsNaN(e[i])) && a[i] != e[i])
            {
                maxAbs = double.PositiveInfinity;
            }
            double excess = policy.Excess(a[i], e[i]);
            if (excess > worstExcess) { worstExcess = excess; worst = i; }
        }
        double relL2 = refSq > 0 ? Math.Sqrt(diffSq / refSq) : Math.Sqrt(diffSq);
        var index = OracleResult.Unravel(worst, expected.ShapeArray);
        return new ComparisonResult(what, actual.ShapeArray, expected.ShapeArray, actual.DType, expected.DType, policy,
            maxAbs, maxRel, index, a.Length > 0 ? a[worst] : double.NaN, a.Length > 0 ? e[worst] : double.NaN,
            mismatches, a.Length, relL2)
        {
            Oracle = judged,
            NonFinite = nonFinite,
            FirstNonFinite = firstNonFinite < 0 ? [] : OracleResult.Unravel(firstNonFinite, expected.ShapeArray),
        };
    }
}
