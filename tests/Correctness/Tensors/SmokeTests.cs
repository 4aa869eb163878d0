using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Tensors;

public class SmokeTests
{
    [Fact]
    public void Zeros_has_shape_and_contiguous_strides()
    {
        var t = Tensor.Zeros(DType.Float32, 2, 3, 4);
        Assert.Equal([2, 3, 4], t.ShapeArray);
        Assert.Equal([12, 4, 1], t.StridesArray);
    }
}
