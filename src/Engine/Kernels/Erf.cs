namespace Harness.Engine.Kernels;

/// <summary>
/// The error function, which .NET lacks. Computed in double and rounded once, so the float result is within
/// 1 ulp of the true value (usually correctly rounded):
/// <list type="bullet">
/// <item>|x| &lt; 2.5: the Maclaurin series erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)), 60 terms in Horner
/// form on t = x^2. At |x| = 2.5 the largest term is ~e^6.25 = 518, so cancellation costs ~1e-13 absolute: far below a float ulp.</item>
/// <item>|x| &gt;= 2.5: erf(x) = 1 - erfc(x) with erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), the
/// Laplace continued fraction, evaluated backwards from 120 terms (relative error below 1e-12 for x &gt;= 2.5).</item>
/// </list>
/// Note: torch's CPU vectorized erf (used by F.gelu) is the Abramowitz-Stegun 7.1.26 approximation (absolute error up to ~1.5e-7),
/// so torch's exact gelu is not the correctly rounded erf; this one is.
/// </summary>
public static class Erf
{
    private const int SeriesTerms = 60;
    private const int FractionTerms = 120;
    private static readonly double[] SeriesCoefficients = BuildSeries();

    private static double[] BuildSeries()
    {
        // c_n = (-1)^n / (n! (2n+1)) * 2/sqrt(pi)
        var c = new double[SeriesTerms];
        double factorial = 1;
        for (int n = 0; n < SeriesTerms; n++)
        {
            if (n > 0) factorial *= n;
            c[n] = (n % 2 == 0 ? 1.0 : -1.0) / (factorial * (2 * n + 1)) * (2.0 / Math.Sqrt(Math.PI));
        }
        return c;
    }

    public static double Compute(double x)
    {
        if (double.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        if (ax < 2.5)
        {
            double t = x * x;
            double s = 0;
            var c = SeriesCoefficients;
            for (int n = SeriesTerms - 1; n >= 0; n--) s = s * t + c[n];
            return x * s;
        }
        if (ax > 6.0) return Math.CopySign(1.0, x); // erfc(6) ~ 2e-17: erf is 1 in double
        double f = ax;
        for (int k = FractionTerms; k >= 1; k--) f = ax + (k * 0.5) / f;
        double erfc = Math.Exp(-ax * ax) / (Math.Sqrt(Math.PI) * f);
        return Math.CopySign(1.0 - erfc, x);
    }

    public static float Compute(float x) => (float)Compute((double)x);

    public static void Compute(ReadOnlySpan<float> x, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = (float)Compute((double)x[i]);
    }
}
