using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Tensors;

/// <summary>View and copy errors name both shapes, the way torch's do.</summary>
public class ViewErrorTests
{
    [Fact]
    public void View_with_the_wrong_element_count_names_both_shapes()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Zeros(DType.Float32, 3, 4).View(2, 5));
        Assert.Equal("shape '[2, 5]' is invalid for input of size 12 (input shape [3, 4])", ex.Message);
    }

    [Fact]
    public void View_of_a_transposed_tensor_fails_but_reshape_copies()
    {
        var t = Tensor.Arange(12, DType.Float32).View(3, 4).Transpose(0, 1);
        var ex = Assert.Throws<InvalidOperationException>(() => t.View(12));
        Assert.Contains("[4, 3]", ex.Message);
        Assert.Contains("[12]", ex.Message);
        Assert.Equal(new double[] { 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11 }, t.Reshape(12).ToDoubleArray());
    }

    [Fact]
    public void View_that_keeps_a_contiguous_block_shares_storage()
    {
        var t = Tensor.Arange(24, DType.Float32).View(2, 3, 4);
        var v = t.Transpose(0, 1).View(3, 2, 2, 2); // splitting the last dim stays a view
        Assert.Same(t.Storage, v.Storage);
        Assert.Equal(t.Transpose(0, 1).ToDoubleArray(), v.ToDoubleArray());
    }

    [Fact]
    public void Expand_of_a_non_singleton_dim_names_target_and_tensor_sizes()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Zeros(DType.Float32, 2, 2).Expand(2, 3));
        Assert.Equal("The expanded size of the tensor (3) must match the existing size (2) at non-singleton dimension 1.  Target sizes: [2, 3].  Tensor sizes: [2, 2]", ex.Message);
    }

    [Fact]
    public void Dim_out_of_range_reads_like_torch()
    {
        var ex = Assert.Throws<IndexOutOfRangeException>(() => Tensor.Zeros(DType.Float32, 2, 2).Transpose(0, 2));
        Assert.Equal("Dimension out of range (expected to be in range of [-2, 1], but got 2)", ex.Message);
    }

    [Fact]
    public void Cat_with_mismatched_sizes_names_the_dimension_and_shapes()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Cat([Tensor.Zeros(DType.Float32, 2, 3), Tensor.Zeros(DType.Float32, 2, 4)], 0));
        Assert.Contains("Sizes of tensors must match except in dimension 0. Expected size 3 but got size 4 for tensor number 1", ex.Message);
    }

    [Fact]
    public void Chunk_split_cat_index_select_and_gather_follow_torch()
    {
        var t = Tensor.Arange(10, DType.Int64);
        Assert.Equal([4, 4, 2], t.Chunk(3).Select(c => c.Shape[0]).ToArray());
        Assert.Equal([3, 3, 3, 1], t.Split(3).Select(c => c.Shape[0]).ToArray());
        Assert.Equal([2, 5, 3], t.Split([2, 5, 3]).Select(c => c.Shape[0]).ToArray());
        var parts = t.Split([2, 5, 3]);
        Assert.Equal(t.ToInt64Array(), Tensor.Cat(parts).ToInt64Array());

        var m = Tensor.Arange(12, DType.Float32).View(3, 4);
        Assert.Equal(new double[] { 8, 9, 10, 11, 0, 1, 2, 3 }, m.IndexSelect(0, Tensor.FromArray([2L, 0L])).ToDoubleArray());
        var g = m.Gather(1, Tensor.FromArray([3L, 0L, 1L, 1L, 2L, 2L], 3, 2));
        Assert.Equal(new double[] { 3, 0, 5, 5, 10, 10 }, g.ToDoubleArray());
        var ex = Assert.Throws<IndexOutOfRangeException>(() => m.IndexSelect(0, Tensor.FromArray([3L])));
        Assert.Contains("index 3", ex.Message);
    }

    [Fact]
    public void Zero_dim_tensor_reshapes_to_one_element_and_back()
    {
        var s = Tensor.Scalar(3.5);
        Assert.Equal([1], s.Reshape(1).ShapeArray);
        Assert.Equal([1, 1], s.View(1, -1).ShapeArray);
        Assert.Equal(3.5, s.Reshape(1).Reshape().Item());
    }

    [Fact]
    public void Squeeze_unsqueeze_and_select_move_dims_without_copies()
    {
        var t = Tensor.Arange(6, DType.Float32).View(1, 2, 1, 3);
        Assert.Equal([2, 3], t.Squeeze().ShapeArray);
        Assert.Equal([2, 1, 3], t.Squeeze(0).ShapeArray);
        Assert.Equal([1, 2, 1, 3], t.Squeeze(1).ShapeArray);
        Assert.Equal([1, 2, 1, 3, 1], t.Unsqueeze(-1).ShapeArray);
        Assert.Equal(new double[] { 3, 4, 5 }, t.Select(1, 1).Reshape(-1).ToDoubleArray());
        Assert.Same(t.Storage, t.Squeeze().Storage);
    }
}
