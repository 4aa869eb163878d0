using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The refusals of IndexedExperts.Take/Gemv/SumInIdOrder and Matmul.Forward that no model reaches (a model passes int64
/// ids of rank 1, float weights of rank 3, matching K): each breaks one condition only, so a mutant that joins the
/// conditions with `&amp;&amp;`, drops the throw or empties the message fails here; and the expert GEMV's float16 path (one
/// Matmul per slot). Written for the Stryker.NET survivors of src/Engine/Ops/{IndexedExperts,Matmul}.cs
/// (notes/issue-21-mutops.md).
/// </summary>
public class IndexedExpertsMatmulMutationTests
{
    private static Tensor Seq(int seed, params int[] shape)
    {
        int n = shape.Aggregate(1, (a, b) => a * b);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = ((i * 37 + seed * 11) % 256 - 128) / 64f;
        return Tensor.FromArray(v, shape);
    }

    private static Tensor Ids(params long[] ids) => Tensor.FromArray(ids, ids.Length);

    private static void Refused(string prefix, Action call)
    {
        var ex = Assert.ThrowsAny<ArgumentException>(call);
        Assert.StartsWith(prefix, ex.Message);
    }

    [Fact]
    public void Take_reads_rows_of_a_table_and_refuses_a_scalar_table_or_non_int64_ids()
    {
        var table = Seq(1, 3, 2);                                                   // [E=3, 2]
        Assert.Equal(new[] { 2, 2 }, IndexedExperts.Take(table, Ids(2, 0)).ShapeArray);
        Assert.Equal(table.Select(0, 2).ToFloatArray().Concat(table.Select(0, 0).ToFloatArray()), IndexedExperts.Take(table, Ids(2, 0)).ToFloatArray());
        Refused("take: a table [E, ...] and int64 ids [n], got ", () => IndexedExperts.Take(Tensor.Scalar(1), Ids(0)));
        Refused("take: a table [E, ...] and int64 ids [n], got ", () => IndexedExperts.Take(table, Tensor.FromArray(new[] { 0 }, 1)));
    }

    [Fact]
    public void Expert_gemv_refuses_each_bad_operand_alone_with_its_message()
    {
        Tensor x = Seq(2, 1, 4), stacked = Seq(3, 3, 5, 4);                        // x [1, K=4], stacked [E=3, N=5, K=4]
        Assert.Equal(new[] { 2, 5 }, IndexedExperts.Gemv(x, stacked, Ids(1, 2)).ShapeArray);
        Refused("expert_gemv: expected a floating-point tensor", () =>
            IndexedExperts.Gemv(Tensor.FromArray(new long[] { 1, 2, 3, 4 }, 1, 4), Tensor.FromArray(new long[60], 3, 5, 4), Ids(0)));
        const string shapes = "expert_gemv: x [rows, K], stacked weights [E, N, K] and int64 ids [slots], got ";
        Refused(shapes, () => IndexedExperts.Gemv(Seq(2, 4), stacked, Ids(0)));                          // x rank 1
        Refused(shapes, () => IndexedExperts.Gemv(x, Seq(3, 5, 4), Ids(0)));                             // stacked rank 2
        Refused(shapes, () => IndexedExperts.Gemv(x, stacked, Tensor.FromArray(new long[] { 0 }, 1, 1)));  // ids rank 2
        Refused(shapes, () => IndexedExperts.Gemv(x, stacked, Tensor.FromArray(new[] { 0 }, 1)));         // ids int32
        Refused("expert_gemv: x is float32, the weights ", () => IndexedExperts.Gemv(x, stacked.To(DType.BFloat16), Ids(0)));
    }

    [Fact]
    public void Expert_gemv_in_float16_is_one_matmul_per_slot()
    {
        Tensor x = Seq(4, 2, 3).To(DType.Float16), stacked = Seq(5, 2, 4, 3).To(DType.Float16);   // x [2, 3], stacked [2, 4, 3]
        var y = IndexedExperts.Gemv(x, stacked, Ids(1, 0));                                            // [2, 4]
        Assert.Equal(new[] { 2, 4 }, y.ShapeArray);
        var expected = Matmul.Forward(x.Narrow(0, 0, 1), stacked.Select(0, 1).T()).ToFloatArray()
            .Concat(Matmul.Forward(x.Narrow(0, 1, 1), stacked.Select(0, 0).T()).ToFloatArray());
        Assert.Equal(expected, y.ToFloatArray());
    }

    [Fact]
    public void Sum_in_id_order_refuses_each_bad_operand_alone_with_its_message()
    {
        var y = Seq(6, 2, 3);                                                      // [slots=2, N=3]
        Assert.Equal(new[] { 1, 3 }, IndexedExperts.SumInIdOrder(y, Ids(1, 0)).ShapeArray);
        Refused("sum_in_id_order: expected a floating-point tensor", () =>
            IndexedExperts.SumInIdOrder(Tensor.FromArray(new long[6], 2, 3), Ids(1, 0)));
        const string shapes = "sum_in_id_order: y [slots, N] and int64 ids [slots], got ";
        Refused(shapes, () => IndexedExperts.SumInIdOrder(Seq(6, 2), Ids(1, 0)));                          // y rank 1
        Refused(shapes, () => IndexedExperts.SumInIdOrder(y, Tensor.FromArray(new long[] { 1, 0 }, 1, 2))); // ids rank 2
        Refused(shapes, () => IndexedExperts.SumInIdOrder(y, Tensor.FromArray(new[] { 1, 0 }, 2)));         // ids int32
        Refused(shapes, () => IndexedExperts.SumInIdOrder(y, Ids(1, 0, 2)));                               // 3 ids, 2 slots
    }

    [Fact]
    public void Matmul_refuses_null_integer_and_mismatched_operands_with_torchs_messages()
    {
        var m = Seq(7, 2, 3);
        Assert.Throws<ArgumentNullException>(() => Matmul.Forward(null!, m));
        Assert.Throws<ArgumentNullException>(() => Matmul.Forward(m, null!));
        var ex = Assert.Throws<NotSupportedException>(() =>
            Matmul.Forward(Tensor.FromArray(new long[4], 2, 2), Tensor.FromArray(new long[4], 2, 2)));
        Assert.Equal("matmul on int64 tensors is not supported by the engine (float32, bfloat16 and float16 are)", ex.Message);
        var mm = Assert.Throws<ArgumentException>(() => Matmul.Forward(m, Seq(8, 4, 5)));
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)", mm.Message);
        var pre = Assert.Throws<ArgumentException>(() => Matmul.Forward(Seq(1, 2, 3), Seq(2, 1, 1, 3, 4), MatmulOptions.PreFixBatchInvariant));
        Assert.StartsWith("matmul_batch_invariant currently only supports 2D x 2D, 3D x 3D, 3D x 2D, 2D x 3D and 4D x 4D with equal batch dims, got shapes [2, 3] and [1, 1, 3, 4]", pre.Message);
    }
}
