using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The RMSNorms and LayerNorm (src/Engine/Ops/Norms.cs) and the fused residual add + norm (ResidualNorm.cs): the checks
/// the offline catalog cannot make (every catalog scenario passes a valid weight, contiguous rows of one dtype and a
/// hidden size far below the host pass's 4096-float scratch), each a Stryker.NET mutant of the `norms` slice that
/// survived the catalog (notes/issue-21-mutants2.md), written as the bug report it guards.
/// </summary>
public class NormsMutationTests
{
    private const double Eps = 1e-5;

    private static ArgumentException Refused(Action call) => Assert.Throws<ArgumentException>(call);

    [Fact]
    public void A_norm_without_scale_given_a_weight_or_a_scaled_norm_without_one_is_refused_naming_the_kind()
    {
        // mutants: either throw removed (the weight silently ignored, or a null weight read as ones) or its message emptied
        var x = Tensor.Randn(DType.Float32, 1, 2, 96);
        var w = Tensor.Full(DType.Float32, 1.5, 96);
        Assert.Equal("rms_norm: GemmaNoScale (with_scale=False) takes no weight",
            Refused(() => Norms.RmsNorm(x, w, Eps, RmsNormKind.GemmaNoScale)).Message);
        foreach (var kind in new[] { RmsNormKind.Llama, RmsNormKind.GemmaOnePlusWeight, RmsNormKind.GemmaScaled })
            Assert.Equal($"rms_norm: {kind} needs a weight of size 96", Refused(() => Norms.RmsNorm(x, null, Eps, kind)).Message);
    }

    [Fact]
    public void A_norm_parameter_of_the_wrong_rank_size_or_dtype_is_refused_naming_it_and_both_shapes()
    {
        // mutants: the rank check dropped or joined to the size check by "and" (a [96, 1] weight has the right first
        // size), the message emptied, the floating-point check of the parameter removed
        var x = Tensor.Randn(DType.Float32, 2, 2, 96);
        Assert.Equal("norm weight of shape [96, 1] does not match the normalized shape [96] of input [2, 96]",
            Refused(() => Norms.RmsNorm(x, Tensor.Full(DType.Float32, 1.0, 96, 1), Eps)).Message);
        Assert.Equal("norm bias of shape [95] does not match the normalized shape [96] of input [2, 96]",
            Refused(() => Norms.LayerNorm(x, null, Tensor.Zeros(DType.Float32, 95), Eps)).Message);
        Assert.StartsWith("norm weight: expected a floating-point tensor",
            Refused(() => Norms.LayerNorm(x, Tensor.Zeros(DType.Int64, 96), null, Eps)).Message);
        Assert.StartsWith("norm weight: expected a floating-point tensor",
            Refused(() => Norms.AddRmsNormInto(null, x, Tensor.Zeros(DType.Int64, 96), Eps, null, Tensor.Zeros(DType.Float32, 2, 96))).Message);
    }

    [Fact]
    public void Integer_rows_are_refused_by_each_norm_naming_it_before_any_arithmetic()
    {
        // mutants: the input's floating-point check removed (integer rows read as floats) or its op name emptied
        var ids = Tensor.Zeros(DType.Int64, 2, 96);
        var w = Tensor.Full(DType.Float32, 1.0, 96);
        Assert.Equal("rms_norm: expected a floating-point tensor (float32, bfloat16, float16), got int64 of shape [2, 96]",
            Refused(() => Norms.RmsNorm(ids, w, Eps)).Message);
        Assert.StartsWith("layer_norm: expected a floating-point tensor", Refused(() => Norms.LayerNorm(ids, w, null, Eps)).Message);
        Assert.StartsWith("add_rms_norm: expected a floating-point tensor",
            Refused(() => Norms.AddRmsNormInto(null, ids, w, Eps, null, Tensor.Zeros(DType.Float32, 2, 96))).Message);
        Assert.Equal("norm weight of shape [95] does not match the normalized shape [96] of input [2, 96]",
            Refused(() => Norms.LayerNorm(Tensor.Zeros(DType.Float32, 2, 96), Tensor.Zeros(DType.Float32, 95), null, Eps)).Message);
    }

    [Fact]
    public void A_scalar_is_normed_as_a_one_element_row_and_rows_of_width_0_give_empty_rows_not_a_division_by_zero()
    {
        // mutants: a rank-0 input's width taken as Size(-1) (which a scalar has not), the host pass's row count
        // computed as NumEl / 0 (a DivideByZeroException). Rows of width 0 were refused as non-contiguous until a tensor
        // without elements counted as contiguous (EmptyTensorTests); now, as torch's RMSNorm over hidden 0, they give
        // empty rows
        var scalar = Tensor.Full(DType.Float32, 3.0);
        var one = Tensor.Full(DType.Float32, 2.0, 1);
        Assert.Equal(2.0 * 3 / Math.Sqrt(9 + Eps), Norms.RmsNorm(scalar, one, Eps).ToFloatArray()[0], 1e-6);
        Assert.Equal(0.0, Norms.LayerNorm(scalar, null, null, Eps).ToFloatArray()[0], 1e-6);
        var empty = Tensor.Zeros(DType.Float32, 3, 0);
        var (residualOut, normed) = (Tensor.Zeros(DType.Float32, 3, 0), Tensor.Zeros(DType.Float32, 3, 0));
        Norms.AddRmsNormInto(empty, empty, Tensor.Zeros(DType.Float32, 0), Eps, residualOut, normed);
        Assert.Equal([3, 0], normed.ShapeArray);
        Assert.Equal([3, 0], Norms.RmsNorm(empty, Tensor.Zeros(DType.Float32, 0), Eps).ShapeArray);
    }

    // Valid arguments of the host pass: x, residual, residualOut [3, 64] float32, weight [64], normed [3, 64].
    private static (Tensor X, Tensor Residual, Tensor Weight, Tensor ResidualOut, Tensor Normed) Valid(DType dt = DType.Float32) =>
        (Tensor.Randn(DType.Float32, 3, 3, 64).To(dt), Tensor.Randn(DType.Float32, 4, 3, 64).To(dt), Tensor.Randn(DType.Float32, 5, 64).To(dt),
         Tensor.Zeros(dt, 3, 64), Tensor.Zeros(dt, 3, 64));

    [Fact]
    public void The_host_pass_refuses_each_argument_it_cannot_read_as_rows_instead_of_reading_past_it()
    {
        // mutants: any one clause of the argument check dropped, negated, or joined to the others by "and" (each case
        // below breaks exactly one clause, so a clause that no longer fires alone lets the pass read the tensor as
        // [rows, n] contiguous rows of the residual's dtype), the message emptied
        var (x, residual, weight, residualOut, normed) = Valid();
        var strided = Tensor.Randn(DType.Float32, 6, 64, 3).Transpose(0, 1);               // [3, 64], not contiguous
        var cases = new (string What, Action Call)[]
        {
            ("strided residual", () => Norms.AddRmsNormInto(x, strided, weight, Eps, residualOut, normed)),
            ("strided normed", () => Norms.AddRmsNormInto(x, residual, weight, Eps, residualOut, Tensor.Zeros(DType.Float32, 64, 3).Transpose(0, 1))),
            ("bf16 normed for float32", () => Norms.AddRmsNormInto(x, residual, weight, Eps, residualOut, Tensor.Zeros(DType.BFloat16, 3, 64))),
            ("normed [4, 64]", () => Norms.AddRmsNormInto(x, residual, weight, Eps, residualOut, Tensor.Zeros(DType.Float32, 4, 64))),
            ("bf16 x", () => Norms.AddRmsNormInto(x.To(DType.BFloat16), residual, weight, Eps, residualOut, normed)),
            ("strided x", () => Norms.AddRmsNormInto(strided, residual, weight, Eps, residualOut, normed)),
            ("x [2, 64]", () => Norms.AddRmsNormInto(Tensor.Zeros(DType.Float32, 2, 64), residual, weight, Eps, residualOut, normed)),
            ("bf16 residualOut", () => Norms.AddRmsNormInto(x, residual, weight, Eps, Tensor.Zeros(DType.BFloat16, 3, 64), normed)),
            ("strided residualOut", () => Norms.AddRmsNormInto(x, residual, weight, Eps, Tensor.Zeros(DType.Float32, 64, 3).Transpose(0, 1), normed)),
            ("residualOut [3, 1, 64]", () => Norms.AddRmsNormInto(x, residual, weight, Eps, Tensor.Zeros(DType.Float32, 3, 1, 64), normed)),
            ("float16 rows", () => Norms.AddRmsNormInto(null, residual.To(DType.Float16), weight.To(DType.Float16), Eps, null, Tensor.Zeros(DType.Float16, 3, 64))),
            ("float16 weight", () => Norms.AddRmsNormInto(x, residual, weight.To(DType.Float16), Eps, residualOut, normed)),
            ("strided weight", () => Norms.AddRmsNormInto(x, residual, Tensor.Randn(DType.Float32, 7, 64, 2).Select(1, 0), Eps, residualOut, normed)),
        };
        foreach (var (what, call) in cases)
        {
            var e = Assert.Throws<ArgumentException>(call);
            Assert.True(e.Message.StartsWith("add_rms_norm: x ") && e.Message.Contains("contiguous tensors, normed in "), $"{what}: {e.Message}");
        }
        Assert.Equal("add_rms_norm: x none, residual [3, 64] float16, outputs none and [3, 64] float16: host float32/bfloat16 [rows, 64] " +
            "contiguous tensors, normed in float16",
            Refused(() => Norms.AddRmsNormInto(null, residual.To(DType.Float16), weight.To(DType.Float16), Eps, null, Tensor.Zeros(DType.Float16, 3, 64))).Message);
        Assert.Equal("add_rms_norm: x [3, 64] float32, residual [3, 64] float32, outputs [3, 64] and [4, 64] float32: host " +
            "float32/bfloat16 [rows, 64] contiguous tensors, normed in float32",
            Refused(() => Norms.AddRmsNormInto(x, residual, weight, Eps, residualOut, Tensor.Zeros(DType.Float32, 4, 64))).Message);
        Assert.Equal("add_rms_norm: a residual add needs residualOut",
            Refused(() => Norms.AddRmsNormInto(x, residual, weight, Eps, null, normed)).Message);
        Norms.AddRmsNormInto(x, residual, weight, Eps, residualOut, normed);                 // and the valid call passes
    }

    [Fact]
    public void The_host_pass_norms_the_last_dim_of_a_rank_3_input_as_rows()
    {
        // mutant: the row width read as Size(+1) (the middle dim of [2, 3, 64], the last dim of [rows, n] only)
        var residual = Tensor.Randn(DType.Float32, 31, 2, 3, 64);
        var weight = Tensor.Randn(DType.Float32, 32, 64);
        var normed = Tensor.Zeros(DType.Float32, 2, 3, 64);
        Norms.AddRmsNormInto(null, residual, weight, Eps, null, normed);
        Assert.True(Norms.RmsNorm(residual, weight, Eps).BitwiseEquals(normed));
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Rows_wider_than_the_scratchs_first_4096_floats_are_normed_as_the_two_ops_norm_them(DType dt)
    {
        // mutants: the thread's scratch sized min(3n, 4096) or 3 / n floats, or reused while it holds fewer than 3n: a
        // hidden size of 2048 (Llama-3.2-1B's) needs 6144 floats, the catalog's hidden sizes fit any of them
        foreach (int n in new[] { 64, 2048 })
            foreach (int threads in new[] { 1, 2 })
            {
                using var t = ComputeSettings.UseThreads(threads);
                var x = Tensor.Randn(DType.Float32, 11, 17, n).To(dt);                       // 17 x 2048 rows: the parallel pass
                var residual = Tensor.Randn(DType.Float32, 12, 17, n).To(dt);
                var weight = Tensor.Randn(DType.Float32, 13, n).To(dt);
                var sum = Elementwise.Add(x, residual);
                var want = Norms.RmsNorm(sum, weight, Eps, RmsNormKind.Llama);
                var (gotSum, got) = ResidualNorm.AddRmsNorm(x, residual, weight, Eps);
                Assert.True(sum.BitwiseEquals(gotSum), $"sum, n {n}, {threads} threads");
                Assert.True(want.BitwiseEquals(got), $"normed, n {n}, {threads} threads");
            }
    }

    [Fact]
    public void The_fused_norm_writes_into_the_callers_buffer_and_leaves_the_residual_alone_unless_told()
    {
        // mutants: the host pass not taken for valid rows (the fallback ops allocate, the buffer stays zero), the residual
        // overwritten without inPlace or kept with it
        var (x, residual, weight, _, _) = Valid(DType.BFloat16);
        var before = residual.Clone();
        var buffer = Tensor.Zeros(DType.BFloat16, 3, 64);
        var (sum, normed) = ResidualNorm.AddRmsNorm(x, residual, weight, Eps, inPlace: false, normedBuffer: (dt, r, c) =>
        {
            Assert.Equal((DType.BFloat16, 3, 64), (dt, r, c));
            return buffer;
        });
        Assert.Same(buffer, normed);
        Assert.True(before.BitwiseEquals(residual), "the residual was overwritten without inPlace");
        Assert.True(Elementwise.Add(x, before).BitwiseEquals(sum));
        var (sumInPlace, _) = ResidualNorm.AddRmsNorm(x, residual, weight, Eps, inPlace: true);
        Assert.Same(residual, sumInPlace);
        Assert.True(sum.BitwiseEquals(residual), "inPlace: the residual holds the sum");

        var plainBuffer = Tensor.Zeros(DType.Float32, 3, 64);                              // bf16 rows, float32 weight: float32 out
        var plain = ResidualNorm.RmsNorm(before, weight.To(DType.Float32), Eps, (dt, r, c) => dt == DType.Float32 ? plainBuffer : null);
        Assert.Same(plainBuffer, plain);
        Assert.True(Norms.RmsNorm(before, weight.To(DType.Float32), Eps).BitwiseEquals(plain));
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Rows_the_host_pass_cannot_read_take_the_two_ops_with_the_same_bits(DType dt)
    {
        // mutants: a clause of FusesOnHost dropped, so a rank-3, strided, mixed-dtype or float16 input enters the host
        // pass (which refuses it, or reads it as rows it is not)
        var x3 = Tensor.Randn(DType.Float32, 21, 2, 3, 64).To(dt);
        var r3 = Tensor.Randn(DType.Float32, 22, 2, 3, 64).To(dt);
        var w = Tensor.Randn(DType.Float32, 23, 64).To(dt);
        var strided = Tensor.Randn(DType.Float32, 24, 64, 6).To(dt).Transpose(0, 1);       // [6, 64]
        var rows = Tensor.Randn(DType.Float32, 25, 6, 64).To(dt);
        var cases = new (string What, Tensor X, Tensor Residual, Tensor Weight)[]
        {
            ("rank 3", x3, r3, w),
            ("strided x", strided, rows, w),
            ("strided residual", rows, strided, w),
            ("float16 rows", rows.To(DType.Float16), rows.To(DType.Float16), w),
            ("float16 weight", rows, strided.Contiguous(), w.To(DType.Float16)),
            ("strided weight", rows, strided.Contiguous(), Tensor.Randn(DType.Float32, 26, 64, 2).To(dt).Select(1, 1)),
            ("residual broadcast over the rows", rows, Tensor.Randn(DType.Float32, 27, 1, 64).To(dt), w),
        };
        foreach (var (what, x, residual, weight) in cases)
        {
            var sum = Elementwise.Add(x, residual);
            var (gotSum, got) = ResidualNorm.AddRmsNorm(x, residual, weight, Eps);
            Assert.True(sum.BitwiseEquals(gotSum), $"{what}: sum");
            Assert.True(Norms.RmsNorm(sum, weight, Eps).BitwiseEquals(got), $"{what}: normed");
            if (x.Rank == 2 && x.DType == residual.DType && residual.Shape[0] == x.Shape[0])
                Assert.True(Norms.RmsNorm(x, weight, Eps).BitwiseEquals(ResidualNorm.RmsNorm(x, weight, Eps)), $"{what}: plain norm");
        }
        // x and residual of two dtypes: the add refuses them as Elementwise.Add does (torch would promote; the engine asks
        // for an explicit To()), not the host pass with its row message
        var other = rows.To(dt == DType.Float32 ? DType.BFloat16 : DType.Float32);
        Assert.StartsWith("add: mixed float dtypes", Refused(() => ResidualNorm.AddRmsNorm(other, rows, w, Eps)).Message);
    }
}
