using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// Elementwise's comparisons on ties (random rows have none, so `&gt;` as `&gt;=` passed), AddInPlace's same-shape float32
/// fast path and its refusals, Clamp with max only or no bound, Where's bool-mask refusal. Written for the Stryker.NET
/// survivors of src/Engine/Ops/Elementwise.cs (notes/issue-21-mutops.md).
/// </summary>
public class ElementwiseMutationTests
{
    [Fact]
    public void Comparisons_tell_equal_elements_from_greater_and_smaller_ones()
    {
        var a = Tensor.FromArray(new[] { 1f, 2f, 3f }, 3);
        var b = Tensor.FromArray(new[] { 2f, 2f, 2f }, 3);
        Assert.Equal(new[] { 1.0, 0, 1 }, Elementwise.Ne(a, b).ToDoubleArray());
        Assert.Equal(new[] { 0.0, 0, 1 }, Elementwise.Gt(a, b).ToDoubleArray());
        Assert.Equal(new[] { 0.0, 1, 1 }, Elementwise.Ge(a, b).ToDoubleArray());
        Assert.Equal(new[] { 1.0, 0, 0 }, Elementwise.Lt(a, b).ToDoubleArray());
        Assert.Equal(new[] { 1.0, 1, 0 }, Elementwise.Le(a, b).ToDoubleArray());
        Assert.Equal(new[] { 0.0, 1, 0 }, Elementwise.Eq(a, 2.0).ToDoubleArray());
        Assert.Equal(new[] { 0.0, 0, 1 }, Elementwise.Gt(a, 2.0).ToDoubleArray());
        Assert.Equal(new[] { 1.0, 0, 0 }, Elementwise.Lt(a, 2.0).ToDoubleArray());
        // an integer tensor against a scalar reads both as double: 0.5 is between 0 and 1, 2^24 + 1 is not 2^24
        var i = Tensor.FromArray(new long[] { 0, 1, 16777217 }, 3);
        Assert.Equal(new[] { 0.0, 1, 1 }, Elementwise.Gt(i, 0.5).ToDoubleArray());
        Assert.Equal(new[] { 0.0, 0, 1 }, Elementwise.Eq(i, 16777217).ToDoubleArray());
    }

    [Fact]
    public void Add_in_place_of_one_shape_adds_once_and_refuses_integers_and_a_smaller_destination()
    {
        var dst = Tensor.FromArray(new[] { 1f, 2f, 3f, 4f }, 2, 2);
        Elementwise.AddInPlace(dst, Tensor.FromArray(new[] { 0.5f, 0.25f, -1f, 8f }, 2, 2));
        Assert.Equal(new[] { 1.5f, 2.25f, 2f, 12f }, dst.ToFloatArray());
        var bf = Tensor.FromArray(new[] { 1f, 2f, 3f, 4f }, 2, 2).To(DType.BFloat16);
        Elementwise.AddInPlace(bf, Tensor.FromArray(new[] { 0.5f, 0.25f, -1f, 8f }, 2, 2));
        Assert.Equal(new[] { 1.5f, 2.25f, 2f, 12f }, bf.ToFloatArray());
        var f = Tensor.FromArray(new[] { 1f, 2f }, 2);
        var e1 = Assert.Throws<ArgumentException>(() => Elementwise.AddInPlace(Tensor.FromArray(new long[2], 2), f));
        Assert.StartsWith("add_: expected a floating-point tensor", e1.Message);
        var e2 = Assert.Throws<ArgumentException>(() => Elementwise.AddInPlace(f, Tensor.FromArray(new long[2], 2)));
        Assert.StartsWith("add_: expected a floating-point tensor", e2.Message);
        var e3 = Assert.Throws<ArgumentException>(() => Elementwise.AddInPlace(f, Tensor.Zeros(DType.Float32, 3, 2)));
        Assert.Equal("output with shape [2] doesn't match the broadcast shape [3, 2]", e3.Message);
    }

    [Fact]
    public void Clamp_takes_max_alone_and_refuses_no_bound_and_where_refuses_a_float_mask()
    {
        var x = Tensor.FromArray(new[] { -1f, 0.5f, 2f }, 3);
        Assert.Equal(new[] { -1f, 0.5f, 1f }, Elementwise.Clamp(x, max: 1.0).ToFloatArray());
        var e = Assert.Throws<ArgumentException>(() => Elementwise.Clamp(x));
        Assert.Equal("torch.clamp: At least one of 'min' or 'max' must not be None", e.Message);
        var w = Assert.Throws<ArgumentException>(() => Elementwise.Where(x, x, x));
        Assert.Equal("where expected condition to be a boolean tensor, but got a tensor with dtype float32", w.Message);
    }

    [Fact]
    public void Each_op_names_itself_when_it_refuses_an_integer_tensor()
    {
        var n = Tensor.FromArray(new long[] { 1, 2 }, 2);
        void Refused(string message, Func<Tensor> op) => Assert.StartsWith(message, Assert.Throws<ArgumentException>(() => op()).Message);
        Refused("sub: supports floating-point tensors; got int64 and int64", () => Elementwise.Sub(n, n));
        Refused("maximum: supports floating-point tensors; got int64 and int64", () => Elementwise.Maximum(n, n));
        Refused("minimum: supports floating-point tensors; got int64 and int64", () => Elementwise.Minimum(n, n));
        Refused("where: supports floating-point tensors; got int64 and int64", () => Elementwise.Where(Tensor.FromArray(new[] { true, false }, 2), n, n));
        foreach (var (name, op) in new (string, Func<Tensor, Tensor>)[]
        {
            ("add", t => Elementwise.Add(t, 1.0)), ("sub", t => Elementwise.Sub(t, 1.0)), ("mul", t => Elementwise.Mul(t, 2.0)),
            ("div", t => Elementwise.Div(t, 2.0)), ("neg", Elementwise.Neg), ("abs", Elementwise.Abs), ("exp", Elementwise.Exp),
            ("log", Elementwise.Log), ("sqrt", Elementwise.Sqrt), ("rsqrt", Elementwise.Rsqrt), ("tanh", Elementwise.Tanh),
            ("sigmoid", Elementwise.Sigmoid), ("square", Elementwise.Square), ("reciprocal", Elementwise.Reciprocal),
            ("pow", t => Elementwise.Pow(t, 2.0)), ("clamp", t => Elementwise.Clamp(t, min: 0.0)),
        })
            Refused($"{name}: expected a floating-point tensor (float32, bfloat16, float16), got int64 of shape [2]", () => op(n));
    }
}
