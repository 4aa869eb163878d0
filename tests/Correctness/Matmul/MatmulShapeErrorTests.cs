using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.MatmulSemantics;

/// <summary>Shapes torch.matmul rejects are rejected with torch's wording and both shapes.</summary>
public class MatmulShapeErrorTests
{
    [Theory]
    [InlineData("2,3", "4,5", "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")]
    [InlineData("3", "4,5", "mat1 and mat2 shapes cannot be multiplied (1x3 and 4x5)")]
    [InlineData("2,6,4", "5,6", "mat1 and mat2 shapes cannot be multiplied (12x4 and 5x6)")]
    [InlineData("4,5", "3", "size mismatch, got input (4), mat (4x5), vec (3)")]
    [InlineData("3", "4", "inconsistent tensor size, expected tensor [3] and src [4]")]
    [InlineData("2,3,4", "2,5,6", "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6) in the batched matmul of [2, 3, 4] and [2, 5, 6]")]
    [InlineData("2,3,4", "3,4,6", "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 0")]
    [InlineData("1,2,32,64", "3,64,16", "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 1")]
    public void Incompatible_shapes_fail_like_torch(string a, string b, string message)
    {
        var ta = Tensor.Zeros(DType.Float32, MatmulShapeTests.ParseShape(a));
        var tb = Tensor.Zeros(DType.Float32, MatmulShapeTests.ParseShape(b));
        var ex = Assert.Throws<ArgumentException>(() => Matmul.Forward(ta, tb));
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void Zero_dim_operand_is_rejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => Matmul.Forward(Tensor.Scalar(1), Tensor.Zeros(DType.Float32, 3)));
        Assert.Equal("both arguments to matmul need to be at least 1D, but they are 0D and 1D", ex.Message);
    }

    [Fact]
    public void Mixed_dtypes_are_rejected_with_both_names()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            Matmul.Forward(Tensor.Zeros(DType.Float32, 2, 3), Tensor.Zeros(DType.BFloat16, 3, 4)));
        Assert.Equal("expected m1 and m2 to have the same dtype, but got: float32 != bfloat16", ex.Message);
    }

    [Fact]
    public void Integer_matmul_is_refused_clearly()
    {
        var ex = Assert.Throws<NotSupportedException>(() =>
            Matmul.Forward(Tensor.Zeros(DType.Int64, 2, 3), Tensor.Zeros(DType.Int64, 3, 4)));
        Assert.Contains("int64", ex.Message);
    }
}
