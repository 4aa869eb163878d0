using System.Globalization;
using System.Text;
using Harness.Engine.Tensors;

namespace Harness.Comparison;

/// <summary>
/// The outcome of comparing an engine tensor with a reference tensor. Reported in this order: shapes (on their own: most
/// of our bugs are shape bugs), then max abs error, max rel error, the worst element's index and both values, the mismatch
/// count, and the relative L2 error.
/// </summary>
public sealed record ComparisonResult(
    string What,
    int[] ActualShape,
    int[] ExpectedShape,
    DType ActualDType,
    DType ExpectedDType,
    TolerancePolicy Policy,
    double MaxAbsError,
    double MaxRelError,
    int[] WorstIndex,
    double WorstActual,
    double WorstExpected,
    long Mismatches,
    long Total,
    double RelativeL2)
{
    public bool ShapeMatches => ActualShape.AsSpan().SequenceEqual(ExpectedShape);

    /// <summary>The module judged against the float64 oracle (null: no oracle capture; the fixed <see cref="Policy"/> judged).</summary>
    public OracleResult? Oracle { get; init; }

    /// <summary>Engine elements that are NaN or infinite where the reference does not hold the same value at the same index.</summary>
    public long NonFinite { get; init; }

    /// <summary>The first such element's index (empty when none).</summary>
    public int[] FirstNonFinite { get; init; } = [];

    /// <summary>The verdict's name: "oracle" or the fixed policy's name (the fallback).</summary>
    public string Verdict => Oracle is null ? Policy.Name : "oracle";

    /// <summary>
    /// Shapes match, no unexpected NaN/Inf, and then: with an oracle capture, the oracle verdict; without one, every element
    /// within the fixed policy (a norm-wise policy judges the relative L2 error instead).
    /// </summary>
    public bool Passed => ShapeMatches && NonFinite == 0 &&
        (Oracle is { } o ? o.Passed : Policy.MaxRelativeL2 is double l2 ? RelativeL2 <= l2 : Mismatches == 0);

    public override string ToString()
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(ci, $"{What}: {(Passed ? "PASS" : "FAIL")}\n");
        if (!ShapeMatches)
        {
            sb.Append(ci, $"  shape mismatch: engine {Shape.Format(ActualShape)} vs reference {Shape.Format(ExpectedShape)}\n");
            return sb.ToString();
        }
        sb.Append(ci, $"  shape {Shape.Format(ActualShape)} (match), dtype engine {ActualDType.TorchName()} / reference {ExpectedDType.TorchName()}\n");
        if (NonFinite > 0)
            sb.Append(ci, $"  NON-FINITE: {NonFinite} engine element(s) are NaN or Inf where the reference is not, the first at {Shape.Format(FirstNonFinite)}\n");
        sb.Append(ci, $"  max abs error {MaxAbsError:E3}, max rel error {MaxRelError:E3}\n");
        if (Total > 0)
            sb.Append(ci, $"  worst element {Shape.Format(WorstIndex)}: engine {WorstActual:G9}, reference {WorstExpected:G9}\n");
        sb.Append(ci, $"  mismatched {Mismatches} of {Total} ({(Total == 0 ? 0 : 100.0 * Mismatches / Total):F2}%) under {Policy}\n");
        sb.Append(ci, $"  relative L2 error {RelativeL2:E3}\n");
        if (Oracle is not null) sb.Append(Oracle.ToString()).Append(ci, $"  verdict: {(Oracle.Passed ? "within" : "OUTSIDE")} the oracle bound ({Oracle.Bound}); the allclose counts above are information\n");
        return sb.ToString();
    }
}
