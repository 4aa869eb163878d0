using Harness.Engine.Tensors;

namespace Harness.Comparison;

/// <summary>Compares an engine tensor with a reference tensor under a tolerance policy.</summary>
public static class TensorComparer
{
    public static ComparisonResult Compare(string what, Tensor actual, Tensor expected, TolerancePolicy? policy = null)
    {
        policy ??= Tolerances.For(expected.DType);
        if (!actual.Shape.SequenceEqual(expected.Shape))
            return new ComparisonResult(what, actual.ShapeArray, expected.ShapeArray, actual.DType, expected.DType, policy,
                double.NaN, double.NaN, [], double.NaN, double.NaN, Math.Max(actual.NumEl, expected.NumEl), Math.Max(actual.NumEl, expected.NumEl), double.NaN);

        var a = actual.ToDoubleArray();
        var e = expected.ToDoubleArray();
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
        var index = Unravel(worst, expected.ShapeArray);
        return new ComparisonResult(what, actual.ShapeArray, expected.ShapeArray, actual.DType, expected.DType, policy,
            maxAbs, maxRel, index, a.Length > 0 ? a[worst] : double.NaN, a.Length > 0 ? e[worst] : double.NaN,
            mismatches, a.Length, relL2);
    }

    private static int[] Unravel(int flat, int[] shape)
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
