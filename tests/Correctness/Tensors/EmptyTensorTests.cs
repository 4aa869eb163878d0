using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Tensors;

/// <summary>
/// Found by the Ops mutation slice (notes/issue-21-mutops.md): a tensor with a zero-size dimension was not contiguous
/// (`Tensor.Zeros(Float32, 2, 0)` has strides [1, 1], and IsContiguous expected 0 for dim 0), so `Contiguous()` cloned it
/// into another non-contiguous tensor and every op reading its span threw "needs a contiguous tensor; shape [2, 0] has
/// strides [1, 1]". torch calls every tensor without elements contiguous: torch.topk of a [2, 0] row with k = 0 gives two
/// [2, 0] tensors and torch.sum over its empty rows gives [0., 0.].
/// </summary>
public class EmptyTensorTests
{
    [Fact]
    public void Rows_of_width_0_give_empty_results_not_an_exception()
    {
        var empty = Tensor.Zeros(DType.Float32, 2, 0);
        Assert.True(empty.IsContiguous);
        Assert.Empty(empty.Span<float>().ToArray());
        var (v, i) = TopKTorchOrder.Forward(empty, 0);
        Assert.Equal([2, 0], v.ShapeArray);
        Assert.Equal([2, 0], i.ShapeArray);
        var (v2, i2) = TopK.Forward(empty, 0);
        Assert.Equal([2, 0], v2.ShapeArray);
        Assert.Equal([2, 0], i2.ShapeArray);
        Assert.Equal(new[] { 0f, 0f }, Reductions.Sum(empty, 1).ToFloatArray());
        Assert.True(Tensor.Zeros(DType.BFloat16, 0, 3).Transpose(0, 1).IsContiguous);   // no elements: any strides
        Assert.False(Tensor.Zeros(DType.Float32, 2, 3).Transpose(0, 1).IsContiguous);   // still refused with elements
    }
}
