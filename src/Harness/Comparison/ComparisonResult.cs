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

    /// <summary>Shapes match and every element is within the policy; a norm-wise policy judges the relative L2 error instead.</summary>
    public bool Passed => ShapeMatches && (Policy.MaxRelativeL2 is double l2 ? RelativeL2 <= l2 : Mismatches == 0);

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
        sb.Append(ci, $"  max abs error {MaxAbsError:E3}, max rel error {MaxRelError:E3}\n");
        if (Total > 0)
            sb.Append(ci, $"  worst element {Shape.Format(WorstIndex)}: engine {WorstActual:G9}, reference {WorstExpected:G9}\n");
        sb.Append(ci, $"  mismatched {Mismatches} of {Total} ({(Total == 0 ? 0 : 100.0 * Mismatches / Total):F2}%) under {Policy}\n");
        sb.Append(ci, $"  relative L2 error {RelativeL2:E3}\n");
        return sb.ToString();
    }
}
