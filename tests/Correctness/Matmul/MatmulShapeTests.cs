using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.MatmulSemantics;

/// <summary>
/// The engine's matmul accepts every shape pair torch.matmul accepts and gives torch's result shape and values
/// (checked against a float64 reference written in this project), in float32, bfloat16 and float16.
/// </summary>
public class MatmulShapeTests
{
    public static TheoryData<string, string> ShapePairs => new()
    {
        // the shape pairs of the issue, Gemma4-E2B's 4D x 3D among them
        { "32,64", "64,16" },
        { "64,16", "4,16,32" },
        { "4,32,64", "64,16" },
        { "1,4,32,64", "64,16" },
        { "1,2,32,64", "2,64,16" },
        { "32,64", "1,2,2,64,16" },
        { "1,2,2,32,64", "64,16" },
        { "1,2,4,32,64", "1,2,4,64,16" },
        // every 1D form
        { "7", "7" },
        { "1", "1" },
        { "13", "13,7" },
        { "7,13", "13" },
        { "3,7,13", "13" },
        { "13", "2,13,7" },
        { "13", "2,3,13,7" },
        { "2,3,7,13", "13" },
        // size-1 broadcast dims on either side, rank differences
        { "2,1,7,13", "5,13,3" },
        { "1,7,13", "4,13,3" },
        { "4,7,13", "1,13,3" },
        { "3,1,2,7,13", "1,4,1,13,5" },
        { "2,7,13", "2,13,5" },
        // sizes that cross the kernel's tile edges
        { "129,13", "13,7" },
        { "7,129", "129,13" },
        { "13,7", "7,129" },
        { "2,129,129", "129,129" },
        { "1,17,257", "3,257,9" },
        // empty dims
        { "0,5", "5,3" },
        { "2,0,5", "5,3" },
    };

    [Theory]
    [MemberData(nameof(ShapePairs))]
    public void Float32_matches_float64_reference(string a, string b) => Check(a, b, DType.Float32);

    [Theory]
    [MemberData(nameof(ShapePairs))]
    public void BFloat16_matches_float64_reference(string a, string b) => Check(a, b, DType.BFloat16);

    [Theory]
    [InlineData("1,2,32,64", "2,64,16")]
    [InlineData("7", "7,13")]
    [InlineData("129,13", "13,7")]
    public void Float16_matches_float64_reference(string a, string b) => Check(a, b, DType.Float16);

    [Fact]
    public void Transposed_and_narrowed_operands_are_read_through_their_strides()
    {
        var a = Tensor.Randn(DType.Float32, 11, 40, 30).Transpose(0, 1).Narrow(0, 3, 27); // [27, 40] strided
        var b = Tensor.Randn(DType.Float32, 12, 2, 17, 40).Transpose(-1, -2);             // [2, 40, 17] strided
        Assert.False(a.IsContiguous);
        Assert.False(b.IsContiguous);
        AssertClose(a, b, Matmul.Forward(a, b));
    }

    [Fact]
    public void Expanded_operand_with_zero_strides_broadcasts_without_a_copy()
    {
        var a = Tensor.Randn(DType.Float32, 13, 1, 7, 9).Expand(4, 7, 9); // stride 0 on the batch dim
        var b = Tensor.Randn(DType.Float32, 14, 4, 9, 5);
        AssertClose(a, b, Matmul.Forward(a, b));
    }

    private static void Check(string shapeA, string shapeB, DType dtype)
    {
        int[] sa = ParseShape(shapeA), sb = ParseShape(shapeB);
        var a = Tensor.Randn(dtype, (ulong)(sa.Sum() * 31 + 1), sa);
        var b = Tensor.Randn(dtype, (ulong)(sb.Sum() * 17 + 2), sb);
        var c = Matmul.Forward(a, b);
        Assert.Equal(dtype, c.DType);
        AssertClose(a, b, c);
    }

    internal static void AssertClose(Tensor a, Tensor b, Tensor c)
    {
        var expected = Float64Matmul.Compute(a, b);
        Assert.True(expected.Shape.SequenceEqual(c.ShapeArray),
            $"matmul {Shape.Format(a.Shape)} x {Shape.Format(b.Shape)}: shape {Shape.Format(c.Shape)}, torch gives {Shape.Format(expected.Shape)}");
        int k = a.Shape[^1];
        var actual = c.ToDoubleArray();
        if (actual.Length == 0) return;
        int worst = 0;
        double worstRatio = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double bound = MatmulTolerance.Bound(c.DType, k, expected.Values[i], expected.AbsSums[i]);
            double ratio = Math.Abs(actual[i] - expected.Values[i]) / bound;
            if (ratio > worstRatio || double.IsNaN(ratio)) { worstRatio = ratio; worst = i; }
        }
        Assert.True(worstRatio <= 1.0,
            $"matmul {Shape.Format(a.Shape)} x {Shape.Format(b.Shape)} ({c.DType.TorchName()}): element {worst} is {actual[worst]}, " +
            $"float64 reference {expected.Values[worst]}, error {Math.Abs(actual[worst] - expected.Values[worst]):E3} is {worstRatio:F2}x the bound");
    }

    internal static int[] ParseShape(string s) => s.Split(',').Select(int.Parse).ToArray();
}
