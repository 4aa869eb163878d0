using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The small ops' refusals and edges that no model reaches (a model passes valid names, float rows, in-range ids): each
/// message whole (a mutant that empties or reorders it, or drops the check, fails here), the integer, scalar and
/// non-last-dim paths, strided rows. Written for the Stryker.NET mutants of src/Engine/Ops/{Activation, MoeActivation,
/// Embedding, TopK, RowStatistics, OpSupport, Softmax, Reductions}.cs (notes/issue-21-mutops.md).
/// </summary>
public class OpsMutationTests
{
    private static Tensor Seq(int seed, params int[] shape)
    {
        int n = shape.Aggregate(1, (a, b) => a * b);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = ((i * 37 + seed * 11) % 256 - 128) / 64f;
        return Tensor.FromArray(v, shape);
    }

    [Fact]
    public void Activation_names_parse_after_trimming_and_an_unknown_one_lists_every_known_name_in_order()
    {
        Assert.Equal(8, Activation.Names.Count);
        Assert.Equal(ActivationKind.Gelu, Activation.Names["gelu"]);
        Assert.Equal(ActivationKind.GeluTanh, Activation.Names["gelu_pytorch_tanh"]);
        Assert.Equal(ActivationKind.GeluTanh, Activation.Names["gelu_tanh"]);
        Assert.Equal(ActivationKind.GeluNew, Activation.Names["gelu_new"]);
        Assert.Equal(ActivationKind.Silu, Activation.Names["silu"]);
        Assert.Equal(ActivationKind.Silu, Activation.Names["swish"]);
        Assert.Equal(ActivationKind.Relu, Activation.Names["relu"]);
        Assert.Equal(ActivationKind.QuickGelu, Activation.Names["quick_gelu"]);
        Assert.Equal(ActivationKind.Silu, Activation.Parse(" silu\n"));
        var ex = Assert.Throws<ArgumentException>(() => Activation.Parse("Silu"));
        Assert.Equal("unknown activation 'Silu'; known: gelu, gelu_new, gelu_pytorch_tanh, gelu_tanh, quick_gelu, relu, silu, swish (Parameter 'name')", ex.Message);
        Assert.Throws<ArgumentNullException>(() => Activation.Parse(null!));
        foreach (var (kind, name) in new[] { (ActivationKind.Gelu, "gelu"), (ActivationKind.GeluTanh, "gelu_pytorch_tanh"), (ActivationKind.GeluNew, "gelu_new"),
                     (ActivationKind.Silu, "silu"), (ActivationKind.Relu, "relu"), (ActivationKind.QuickGelu, "quick_gelu") })
            Assert.Equal(name, Activation.Name(kind));
        Assert.Throws<ArgumentOutOfRangeException>(() => Activation.Name((ActivationKind)99));
    }

    [Fact]
    public void Activations_refuse_integers_and_a_gated_input_of_odd_width_or_rank_0_naming_the_shape()
    {
        var ints = Assert.Throws<ArgumentException>(() => Activation.Apply(Tensor.FromArray(new long[] { 1, 2 }, 2), ActivationKind.QuickGelu));
        Assert.Equal("quick_gelu: expected a floating-point tensor (float32, bfloat16, float16), got int64 of shape [2]", ints.Message);
        var odd = Assert.Throws<ArgumentException>(() => Activation.ApplyGated(Tensor.Zeros(DType.Float32, 2, 5), ActivationKind.Silu));
        Assert.Equal("gated silu: the last dimension must be even (gate and up halves), got shape [2, 5]", odd.Message);
        var scalar = Assert.Throws<ArgumentException>(() => Activation.ApplyGated(Tensor.Scalar(1.0), ActivationKind.Gelu));
        Assert.Equal("gated gelu: the last dimension must be even (gate and up halves), got shape []", scalar.Message);
    }

    [Theory]
    [InlineData(DType.Float32, 1)]
    [InlineData(DType.BFloat16, 1)]
    [InlineData(DType.Float32, 4)]
    [InlineData(DType.BFloat16, 4)]
    public void The_one_pass_gated_activation_reads_column_views_of_a_fused_output_and_every_row_at_any_thread_count(DType dt, int threads)
    {
        // gate and up: the two halves of a fused [rows, 2d] gate_up output (row stride 2d); 300 rows of 128: past the
        // parallel bound at 4 threads
        int rows = 300, d = 128;
        var fused = Tensor.Randn(DType.Float32, 5, rows, 2 * d).To(dt);
        var gate = fused.Narrow(1, 0, d);
        var up = fused.Narrow(1, d, d);
        var want = Elementwise.Mul(Activation.Apply(gate.Contiguous(), ActivationKind.GeluTanh), up.Contiguous());
        var output = Tensor.Zeros(dt, rows, d);
        using (ComputeSettings.UseThreads(threads))
        {
            Activation.ApplyGatedInto(gate, up, ActivationKind.GeluTanh, output);
            Assert.True(output.BitwiseEquals(want), "ApplyGatedInto on views");
            Assert.True(Activation.ApplyGated(fused, ActivationKind.GeluTanh).BitwiseEquals(want), "ApplyGated on the fused output");
            Assert.True(Activation.ApplyGated(gate, up, ActivationKind.GeluTanh).BitwiseEquals(want), "ApplyGated on the halves");
        }
        // a rank-3 contiguous gate and up: rows over every leading dim
        var g3 = gate.Contiguous().View(3, 100, d);
        var u3 = up.Contiguous().View(3, 100, d);
        var o3 = Tensor.Zeros(dt, 3, 100, d);
        Activation.ApplyGatedInto(g3, u3, ActivationKind.GeluTanh, o3);
        Assert.True(o3.View(rows, d).BitwiseEquals(want), "rank 3");
        // operands the one pass cannot read (mixed dtypes, a transposed up) take act then mul with the same arithmetic
        var upT = Tensor.Zeros(dt, d, rows).T();
        upT.CopyFrom(up);
        Assert.True(Activation.ApplyGated(gate, upT, ActivationKind.GeluTanh).BitwiseEquals(want), "transposed up");
    }

    [Fact]
    public void The_one_pass_gated_activation_refuses_what_it_cannot_read_naming_all_three_tensors()
    {
        const string tail = ": host float32/bfloat16 tensors of one shape with contiguous rows, the output contiguous";
        var f = DType.Float32;
        void Refused(Tensor g, Tensor u, Tensor o, string shapes)
        {
            var ex = Assert.Throws<ArgumentException>(() => Activation.ApplyGatedInto(g, u, ActivationKind.Relu, o));
            Assert.Equal("gated relu: " + shapes + tail, ex.Message);
        }
        Refused(Tensor.Zeros(f, 2, 4), Tensor.Zeros(DType.BFloat16, 2, 4), Tensor.Zeros(f, 2, 4), "gate [2, 4] float32, up [2, 4] bfloat16, output [2, 4] float32");
        Refused(Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 2, 4), Tensor.Zeros(DType.BFloat16, 2, 4), "gate [2, 4] float32, up [2, 4] float32, output [2, 4] bfloat16");
        Refused(Tensor.Zeros(DType.Float16, 2, 4), Tensor.Zeros(DType.Float16, 2, 4), Tensor.Zeros(DType.Float16, 2, 4), "gate [2, 4] float16, up [2, 4] float16, output [2, 4] float16");
        Refused(Tensor.Zeros(f, 4, 2).T(), Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 2, 4), "gate [2, 4] float32, up [2, 4] float32, output [2, 4] float32");
        Refused(Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 4, 2).T(), Tensor.Zeros(f, 2, 4), "gate [2, 4] float32, up [2, 4] float32, output [2, 4] float32");
        Refused(Tensor.Scalar(1.0), Tensor.Scalar(1.0), Tensor.Scalar(1.0), "gate [] float32, up [] float32, output [] float32");
        Refused(Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 2, 2), Tensor.Zeros(f, 2, 4), "gate [2, 4] float32, up [2, 2] float32, output [2, 4] float32");
        Refused(Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 2, 2), "gate [2, 4] float32, up [2, 4] float32, output [2, 2] float32");
        Refused(Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 2, 4), Tensor.Zeros(f, 2, 8).Narrow(1, 0, 4), "gate [2, 4] float32, up [2, 4] float32, output [2, 4] float32");
        Refused(Tensor.Zeros(f, 2, 3, 4).Narrow(1, 0, 2), Tensor.Zeros(f, 2, 2, 4), Tensor.Zeros(f, 2, 2, 4), "gate [2, 2, 4] float32, up [2, 2, 4] float32, output [2, 2, 4] float32");
    }

    [Fact]
    public void Moe_activation_names_parse_exactly_and_an_unknown_one_lists_every_known_name()
    {
        Assert.Equal(11, MoeActivations.Names.Count);
        foreach (var (name, act) in new[] { ("silu", MoeActivation.Silu), ("gelu", MoeActivation.Gelu), ("gelu_tanh", MoeActivation.GeluTanh),
                     ("silu_no_mul", MoeActivation.SiluNoMul), ("gelu_no_mul", MoeActivation.GeluNoMul), ("gelu_tanh_no_mul", MoeActivation.GeluTanhNoMul),
                     ("relu2_no_mul", MoeActivation.Relu2NoMul), ("swish", MoeActivation.Silu), ("gelu_pytorch_tanh", MoeActivation.GeluTanh),
                     ("gelu_approximate_tanh", MoeActivation.GeluTanh), ("gelu_pytorch_tanh_no_mul", MoeActivation.GeluTanhNoMul) })
            Assert.Equal(act, MoeActivations.Parse(name));
        var ex = Assert.Throws<ArgumentException>(() => MoeActivations.Parse(" silu"));
        Assert.Equal("unknown MoE activation ' silu'; known: gelu, gelu_approximate_tanh, gelu_no_mul, gelu_pytorch_tanh, gelu_pytorch_tanh_no_mul, " +
                     "gelu_tanh, gelu_tanh_no_mul, relu2_no_mul, silu, silu_no_mul, swish (Parameter 'name')", ex.Message);
        Assert.Throws<ArgumentNullException>(() => MoeActivations.Parse(null!));
        Assert.Equal(MoeActivation.GeluTanhNoMul, MoeActivation.GeluTanh.WithoutMul());
        Assert.Equal(MoeActivation.GeluNoMul, MoeActivation.Gelu.WithoutMul());
        Assert.Equal(MoeActivation.SiluNoMul, MoeActivation.Silu.WithoutMul());
        Assert.Equal(MoeActivation.Relu2NoMul, MoeActivation.Relu2NoMul.WithoutMul());
        Assert.Equal(ActivationKind.Relu, MoeActivation.Relu2NoMul.Kind());
        Assert.Equal(ActivationKind.GeluTanh, MoeActivation.GeluTanhNoMul.Kind());
        Assert.Equal(ActivationKind.Gelu, MoeActivation.GeluNoMul.Kind());
        Assert.Equal(ActivationKind.Silu, MoeActivation.SiluNoMul.Kind());
        Assert.Throws<ArgumentOutOfRangeException>(() => ((MoeActivation)99).Kind());
    }

    [Fact]
    public void Moe_activations_refuse_a_gated_input_of_odd_width_mismatched_halves_or_two_inputs_to_a_non_gated_one()
    {
        var odd = Assert.Throws<ArgumentException>(() => MoeActivation.GeluTanh.Apply(Tensor.Zeros(DType.Float32, 2, 3)));
        Assert.Equal("gelu_tanh is gated: the last dimension must be 2d (gate and up halves), got shape [2, 3]", odd.Message);
        var scalar = Assert.Throws<ArgumentException>(() => MoeActivation.Silu.Apply(Tensor.Scalar(1.0)));
        Assert.Equal("silu is gated: the last dimension must be 2d (gate and up halves), got shape []", scalar.Message);
        var two = Assert.Throws<ArgumentException>(() => MoeActivation.SiluNoMul.Apply(Tensor.Zeros(DType.Float32, 2), Tensor.Zeros(DType.Float32, 2)));
        Assert.Equal("silu_no_mul is not gated: it takes one input", two.Message);
        var differ = Assert.Throws<ArgumentException>(() => MoeActivation.Gelu.Apply(Tensor.Zeros(DType.Float32, 2, 2), Tensor.Zeros(DType.Float32, 2, 3)));
        Assert.Equal("gelu: gate [2, 2] and up [2, 3] differ", differ.Message);
        var x = Seq(3, 2, 6);
        Assert.True(MoeActivation.Relu2NoMul.Apply(x).BitwiseEquals(Elementwise.Square(Activation.Apply(x, ActivationKind.Relu))));
        Assert.True(MoeActivation.GeluNoMul.Apply(x).BitwiseEquals(Activation.Apply(x, ActivationKind.Gelu)));
        Assert.True(MoeActivation.Gelu.Apply(x).BitwiseEquals(Elementwise.Mul(Activation.Apply(x.Narrow(-1, 0, 3), ActivationKind.Gelu), x.Narrow(-1, 3, 3))));
    }

    [Fact]
    public void Embedding_refuses_a_table_not_2d_float_ids_and_out_of_range_ids_with_the_whole_message()
    {
        var w = Seq(1, 5, 3);
        var rank = Assert.Throws<ArgumentException>(() => Embedding.Lookup(Seq(1, 15), Tensor.FromArray(new long[] { 0 }, 1)));
        Assert.Equal("embedding: weight must be 2D [vocab, hidden], got shape [15]", rank.Message);
        var dt = Assert.Throws<ArgumentException>(() => Embedding.Lookup(w, Tensor.FromArray(new[] { 1f }, 1)));
        Assert.Equal("embedding: expected ids of dtype int64 or int32, got float32", dt.Message);
        var high = Assert.Throws<IndexOutOfRangeException>(() => Embedding.Lookup(w, Tensor.FromArray(new long[] { 0, 1, 4, 5 }, 2, 2)));
        Assert.Equal("embedding: id 5 (at flat position 3 of ids shape [2, 2]) is out of range for a vocab size of 5 (valid ids are 0..4)", high.Message);
        var low = Assert.Throws<IndexOutOfRangeException>(() => Embedding.Lookup(w, Tensor.FromArray(new[] { -1 }, 1)));
        Assert.Equal("embedding: id -1 (at flat position 0 of ids shape [1]) is out of range for a vocab size of 5 (valid ids are 0..4)", low.Message);
        // a transposed (strided) table and a narrowed one (offset) give the rows of the contiguous table, bit for bit
        var wt = Tensor.Zeros(DType.Float32, 3, 5).T();
        wt.CopyFrom(w);
        var ids = Tensor.FromArray(new long[] { 4, 0, 2 }, 3);
        Assert.True(Embedding.Lookup(wt, ids).BitwiseEquals(Embedding.Lookup(w, ids)));
        var big = Seq(2, 9, 3);
        Assert.True(Embedding.Lookup(big.Narrow(0, 4, 5), ids).BitwiseEquals(Embedding.Lookup(big.Narrow(0, 4, 5).Contiguous(), ids)));
        Assert.Equal(big.Narrow(0, 8, 1).ToFloatArray(), Embedding.Lookup(big.Narrow(0, 4, 5), Tensor.FromArray(new long[] { 4 }, 1)).ToFloatArray());
        Assert.Equal(new[] { 0, 3 }, Embedding.Lookup(w, Tensor.Zeros(DType.Int64, 0)).Shape.ToArray());
    }

    [Fact]
    public void Topk_refuses_k_outside_0_to_n_with_the_whole_message_and_takes_a_scalar()
    {
        var x = Seq(1, 2, 3);
        Assert.StartsWith("topk: selected index k=4 out of range for last dim of size 3 (shape [2, 3])",
            Assert.Throws<ArgumentOutOfRangeException>(() => TopK.Forward(x, 4)).Message);
        Assert.StartsWith("topk: selected index k=-1 out of range for last dim of size 3 (shape [2, 3])",
            Assert.Throws<ArgumentOutOfRangeException>(() => TopK.Forward(x, -1)).Message);
        Assert.StartsWith("topk: expected a floating-point tensor", Assert.Throws<ArgumentException>(() => TopK.Forward(Tensor.FromArray(new long[] { 1 }, 1), 1)).Message);
        var (v, i) = TopK.Forward(Tensor.Scalar(2.0), 1);
        Assert.Equal(0, v.Rank);
        Assert.Equal(0, i.Rank);
        Assert.Equal(2f, v.ToFloatArray()[0]);
        var (v3, i3) = TopK.Forward(x, 3);
        Assert.Equal(new[] { 2, 3 }, v3.Shape.ToArray());
        Assert.Equal(new[] { 2, 3 }, i3.Shape.ToArray());
        var xs = x.ToFloatArray();
        Assert.Equal(xs.Chunk(3).SelectMany(r => r.OrderByDescending(f => f)).ToArray(), v3.ToFloatArray());
    }

    [Fact]
    public void Row_mean_and_population_std_are_summed_in_float64_per_row_and_keep_the_leading_dims()
    {
        var x = Seq(4, 2, 3, 5).To(DType.BFloat16);
        var (mean, std) = RowStatistics.MeanStd(x);
        Assert.Equal(new[] { 2, 3, 1 }, mean.Shape.ToArray());
        Assert.Equal(new[] { 2, 3, 1 }, std.Shape.ToArray());
        var v = x.ToDoubleArray();
        for (int r = 0; r < 6; r++)
        {
            var row = v.Skip(r * 5).Take(5).ToArray();
            double m = row.Average();
            Assert.Equal((float)m, mean.ToFloatArray()[r]);
            Assert.Equal((float)Math.Sqrt(row.Sum(e => (e - m) * (e - m)) / 5), std.ToFloatArray()[r]);
        }
    }

    [Fact]
    public void Mixed_float_dtypes_are_refused_unless_one_is_a_scalar_and_integers_alone_are_refused()
    {
        var f = Seq(1, 2, 2);
        var b = f.To(DType.BFloat16);
        var mixed = Assert.Throws<ArgumentException>(() => Elementwise.Add(f, b));
        Assert.Equal("add: mixed float dtypes float32 (shape [2, 2]) and bfloat16 (shape [2, 2]); convert one with To() first", mixed.Message);
        Assert.Equal(DType.BFloat16, Elementwise.Mul(Tensor.Scalar(2.0), b).DType);      // a 0-dim float32 scalar: the tensor's dtype
        Assert.Equal(DType.BFloat16, Elementwise.Mul(b, Tensor.Scalar(2.0)).DType);
        var scalars = Assert.Throws<ArgumentException>(() => Elementwise.Mul(Tensor.Scalar(2.0), Tensor.Scalar(2.0).To(DType.BFloat16)));
        Assert.Equal("mul: mixed float dtypes float32 (shape []) and bfloat16 (shape []); convert one with To() first", scalars.Message);
        var ints = Tensor.FromArray(new long[] { 1, 2, 3, 4 }, 2, 2);
        Assert.Equal(DType.BFloat16, Elementwise.Sub(b, ints).DType);
        Assert.Equal(DType.BFloat16, Elementwise.Sub(ints, b).DType);
        var none = Assert.Throws<ArgumentException>(() => Elementwise.Div(ints, ints));
        Assert.Equal("div: supports floating-point tensors; got int64 and int64", none.Message);
    }

    [Fact]
    public void Softmax_over_a_leading_dim_of_a_scalar_and_its_refusal_of_integers()
    {
        var x = Seq(5, 3, 4, 2);
        var last = Softmax.Forward(x.Transpose(1, 2).Contiguous(), -1).Transpose(1, 2).Contiguous();
        Assert.True(Softmax.Forward(x, 1).BitwiseEquals(last), "softmax over dim 1 = over the last dim of the transposed input");
        Assert.True(Softmax.Forward(x, -2).BitwiseEquals(last));
        var first = Softmax.Forward(x.Transpose(0, 2).Contiguous(), -1).Transpose(0, 2).Contiguous();
        Assert.True(Softmax.Forward(x, 0).BitwiseEquals(first));
        var logFirst = Softmax.LogSoftmax(x.Transpose(0, 2).Contiguous(), -1).Transpose(0, 2).Contiguous();
        Assert.Equal(logFirst.ToFloatArray(), Softmax.LogSoftmax(x, 0).ToFloatArray(), new FloatUlps(1));
        var s = Softmax.Forward(Tensor.Scalar(3.0));
        Assert.Equal(0, s.Rank);
        Assert.Equal(1f, s.ToFloatArray()[0]);
        Assert.Equal(0f, Softmax.LogSoftmax(Tensor.Scalar(3.0)).ToFloatArray()[0]);
        Assert.Equal("softmax: expected a floating-point tensor (float32, bfloat16, float16), got int64 of shape [2]",
            Assert.Throws<ArgumentException>(() => Softmax.Forward(Tensor.FromArray(new long[] { 1, 2 }, 2))).Message);
        Assert.Equal("log_softmax: expected a floating-point tensor (float32, bfloat16, float16), got int64 of shape [2]",
            Assert.Throws<ArgumentException>(() => Softmax.LogSoftmax(Tensor.FromArray(new long[] { 1, 2 }, 2))).Message);
        // bf16: computed in float32, rounded once; log_softmax over the last dim rounds its sum to bf16 (torch's kernel)
        var xb = x.To(DType.BFloat16);
        Assert.Equal(DType.BFloat16, Softmax.Forward(xb).DType);
        Assert.Equal(DType.BFloat16, Softmax.LogSoftmax(xb, 0).DType);
    }

    private sealed class FloatUlps(int ulps) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(BitConverter.SingleToInt32Bits(a) - BitConverter.SingleToInt32Bits(b)) <= ulps;
        public int GetHashCode(float f) => 0;
    }

    [Fact]
    public void Reductions_of_integers_scalars_and_empty_dims_follow_torch()
    {
        var ints = Tensor.FromArray(new long[] { 3, -1, 7, 7, 2, -5 }, 2, 3);
        Assert.Equal(new long[] { 9, 4 }, Reductions.Sum(ints, 1).ToInt64Array());
        Assert.Equal(DType.Int64, Reductions.Sum(ints, 1).DType);
        Assert.Equal(new long[] { 10, 1, 2 }, Reductions.Sum(ints, 0).ToInt64Array());
        var (mx, mi) = Reductions.Max(ints, 1);
        Assert.Equal(new long[] { 7, 7 }, mx.ToInt64Array());
        Assert.Equal(new long[] { 2, 0 }, mi.ToInt64Array());
        var (mn, ni) = Reductions.Min(ints, 1, keepDim: true);
        Assert.Equal(new long[] { -1, -5 }, mn.ToInt64Array());
        Assert.Equal(new long[] { 1, 2 }, ni.ToInt64Array());
        Assert.Equal(new[] { 2, 1 }, ni.Shape.ToArray());
        Assert.Equal(new long[] { 2, 0 }, Reductions.ArgMax(ints, 1).ToInt64Array());
        Assert.Equal(new long[] { 1, 2 }, Reductions.ArgMin(ints, 1).ToInt64Array());
        Assert.Equal(new long[] { 7 }, Reductions.Amax(ints, 1).Narrow(0, 0, 1).ToInt64Array());
        Assert.Equal(new long[] { -5 }, Reductions.Amin(ints).Reshape(1).ToInt64Array());
        Assert.Equal(2L, Reductions.ArgMax(ints).Reshape(1).ToInt64Array()[0]);
        Assert.Equal(5L, Reductions.ArgMin(ints).Reshape(1).ToInt64Array()[0]);
        var mean = Assert.Throws<ArgumentException>(() => Reductions.Mean(ints, 1));
        Assert.Equal("mean(): could not infer output dtype. Input dtype must be either a floating point or complex dtype. Got: int64", mean.Message);
        var empty = Assert.Throws<ArgumentException>(() => Reductions.Amax(Tensor.Zeros(DType.Float32, 2, 0), 1));
        Assert.Equal("max(): Expected reduction dim 1 to have non-zero size (input shape [2, 0])", empty.Message);
        Assert.Equal("argmin(): Expected reduction dim 0 to have non-zero size (input shape [0, 3])",
            Assert.Throws<ArgumentException>(() => Reductions.ArgMin(Tensor.Zeros(DType.Float32, 0, 3), 0)).Message);
        // a scalar reduces to itself, keepDim or not
        var s = Reductions.Sum(Tensor.Scalar(2.5), 0, keepDim: true);
        Assert.Equal(0, s.Rank);
        Assert.Equal(2.5f, s.ToFloatArray()[0]);
        Assert.Equal(0, Reductions.Mean(Tensor.Scalar(2.5), -1).Rank);
        // floats: mean = float32 sum / n rounded once; keepDim keeps the dim as 1; a middle dim
        var x = Seq(6, 2, 3, 4);
        var m = Reductions.Mean(x, 1, keepDim: true);
        Assert.Equal(new[] { 2, 1, 4 }, m.Shape.ToArray());
        var xs = x.ToFloatArray();
        for (int a = 0; a < 2; a++)
            for (int c = 0; c < 4; c++)
            {
                float sum = 0;
                for (int b = 0; b < 3; b++) sum += xs[(a * 3 + b) * 4 + c];
                Assert.Equal(sum / 3, m.ToFloatArray()[a * 4 + c]);
            }
        Assert.Equal(new[] { 2, 4 }, Reductions.Amax(x, 1).Shape.ToArray());
        var (fv, fi) = Reductions.Max(x, -1);
        Assert.Equal(new[] { 2, 3 }, fi.Shape.ToArray());
        for (int r = 0; r < 6; r++) Assert.Equal(xs[r * 4 + (int)fi.ToInt64Array()[r]], fv.ToFloatArray()[r]);
        var (gv, gi) = Reductions.Min(x.To(DType.BFloat16), -1);
        Assert.Equal(DType.BFloat16, gv.DType);
        for (int r = 0; r < 6; r++) Assert.Equal(xs.Skip(r * 4).Take(4).Min(), gv.ToFloatArray()[r]);
        Assert.Equal(DType.Int64, Reductions.ArgMax(x.To(DType.BFloat16), 0).DType);
    }
}
