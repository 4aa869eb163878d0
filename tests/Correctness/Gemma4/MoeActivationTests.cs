using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Gemma4;

/// <summary>
/// The fused-MoE activation enumeration: Gemma4's experts read hidden_activation="gelu_pytorch_tanh", which must map to
/// the tanh GELU (vLLM passed "gelu", the exact one); unknown names fail naming every known one.
/// </summary>
public class MoeActivationTests
{
    [Theory]
    [InlineData("gelu_pytorch_tanh", MoeActivation.GeluTanh)]
    [InlineData("gelu_tanh", MoeActivation.GeluTanh)]
    [InlineData("gelu_approximate_tanh", MoeActivation.GeluTanh)]
    [InlineData("gelu", MoeActivation.Gelu)]
    [InlineData("silu", MoeActivation.Silu)]
    [InlineData("swish", MoeActivation.Silu)]
    [InlineData("silu_no_mul", MoeActivation.SiluNoMul)]
    [InlineData("gelu_no_mul", MoeActivation.GeluNoMul)]
    [InlineData("gelu_tanh_no_mul", MoeActivation.GeluTanhNoMul)]
    [InlineData("relu2_no_mul", MoeActivation.Relu2NoMul)]
    public void Names_and_aliases_parse(string name, MoeActivation expected) => Assert.Equal(expected, MoeActivations.Parse(name));

    [Fact]
    public void Gelu_pytorch_tanh_is_not_the_exact_gelu() =>
        Assert.NotEqual(MoeActivations.Parse("gelu"), MoeActivations.Parse("gelu_pytorch_tanh"));

    [Theory]
    [InlineData("gelu_new")]
    [InlineData("GELU")]
    [InlineData("swigluoai")]
    public void An_unknown_name_is_an_error_naming_it_and_the_known_ones(string name)
    {
        var e = Assert.Throws<ArgumentException>(() => MoeActivations.Parse(name));
        Assert.Contains($"'{name}'", e.Message);
        foreach (var known in new[] { "gelu", "gelu_tanh", "gelu_pytorch_tanh", "silu", "relu2_no_mul" })
            Assert.Contains(known, e.Message);
    }

    [Fact]
    public void Gated_and_non_gated_variants()
    {
        Assert.True(MoeActivation.GeluTanh.IsGated());
        Assert.False(MoeActivation.GeluTanhNoMul.IsGated());
        Assert.Equal(MoeActivation.GeluTanhNoMul, MoeActivation.GeluTanh.WithoutMul());
        Assert.Equal(MoeActivation.SiluNoMul, MoeActivation.Silu.WithoutMul());
        Assert.Equal(MoeActivation.Relu2NoMul, MoeActivation.Relu2NoMul.WithoutMul());
    }

    [Fact]
    public void Gated_applies_act_to_the_first_half_and_multiplies_by_the_second()
    {
        var x = Tensor.FromArray(new float[] { 1f, -2f, 0.5f, 3f, 2f, -1f }, 1, 6); // gate [1,-2,0.5], up [3,2,-1]
        var y = MoeActivation.GeluTanh.Apply(x).ToDoubleArray();
        double[] gate = [1, -2, 0.5], up = [3, 2, -1];
        for (int i = 0; i < 3; i++)
        {
            double g = gate[i], t = 0.5 * g * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (g + 0.044715 * g * g * g)));
            Assert.Equal(t * up[i], y[i], 5);
        }
        var exact = MoeActivation.Gelu.Apply(x).ToDoubleArray();
        Assert.NotEqual(exact[0], y[0]);                                       // gelu(1): 0.84134 vs tanh 0.84119
        Assert.Equal([1, 3], MoeActivation.Gelu.Apply(x).ShapeArray);
    }

    [Fact]
    public void Non_gated_keeps_the_width_and_relu2_squares()
    {
        var x = Tensor.FromArray(new float[] { -1f, 2f, 3f }, 3);
        Assert.Equal([0d, 4d, 9d], MoeActivation.Relu2NoMul.Apply(x).ToDoubleArray());
        Assert.Equal([3], MoeActivation.SiluNoMul.Apply(x).ShapeArray);
    }

    [Fact]
    public void A_gated_activation_on_an_odd_width_names_the_shape()
    {
        var e = Assert.Throws<ArgumentException>(() => MoeActivation.Silu.Apply(Tensor.Zeros(DType.Float32, 2, 5)));
        Assert.Contains("[2, 5]", e.Message);
    }
}
