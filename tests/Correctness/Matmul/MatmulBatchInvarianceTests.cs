using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.MatmulSemantics;

/// <summary>
/// Batch-invariant mode: a row computed alone has the same bits as the same row inside a batch of 2..64 rows, at any
/// position, for 2D, 3D and ND inputs, in float32 and bfloat16, whatever the thread count.
/// </summary>
[Collection(SerialCollection.Name)]
public class MatmulBatchInvarianceTests
{
    private const int MaxBatch = 64;
    // K = 300 crosses several K blocks and vector tails; N = 37 crosses the column tiles.
    private const int K = 300, N = 37;

    public enum Layout { TwoD, ThreeD, FourDxThreeD }

    [Theory]
    [InlineData(Layout.TwoD, DType.Float32)]
    [InlineData(Layout.TwoD, DType.BFloat16)]
    [InlineData(Layout.ThreeD, DType.Float32)]
    [InlineData(Layout.ThreeD, DType.BFloat16)]
    [InlineData(Layout.FourDxThreeD, DType.Float32)]
    [InlineData(Layout.FourDxThreeD, DType.BFloat16)]
    public void Row_alone_equals_row_in_any_batch_at_any_position(Layout layout, DType dtype)
    {
        using var _ = ComputeSettings.UseBatchInvariant();
        var rows = Tensor.Randn(dtype, 101, MaxBatch, K);           // the pool of rows
        var weight = Tensor.Randn(dtype, 102, 2, K, N);              // ND layout multiplies by a 3D weight
        var alone = new Tensor[MaxBatch];
        using (ComputeSettings.UseThreads(1))
            for (int r = 0; r < MaxBatch; r++) alone[r] = Run(layout, rows.Narrow(0, r, 1), weight);

        int[] threadCounts = [1, 2, 3, 4];
        for (int batch = 2; batch <= MaxBatch; batch++)
        {
            // rotate the pool so each row lands at a different position for each batch size
            int shift = (batch * 7) % MaxBatch;
            var order = Enumerable.Range(0, batch).Select(p => (p + shift) % MaxBatch).ToArray();
            var input = rows.IndexSelect(0, Tensor.FromArray(order.Select(o => (long)o).ToArray()));
            using var threads = ComputeSettings.UseThreads(threadCounts[batch % threadCounts.Length]);
            var output = Run(layout, input, weight);
            for (int p = 0; p < batch; p++)
            {
                var row = RowOf(layout, output, p);
                var expected = RowOf(layout, alone[order[p]], 0);
                Assert.True(expected.BitwiseEquals(row),
                    $"{layout} {dtype.TorchName()}: row {order[p]} at position {p} of a batch of {batch} " +
                    $"({ComputeSettings.Threads} threads) differs from the same row computed alone: " +
                    $"first difference at column {FirstDifference(expected, row)}");
            }
        }
    }

    [Fact]
    public void Without_batch_invariant_mode_the_check_catches_the_one_row_fast_path()
    {
        // Normal mode multiplies a single row by a weight (x W^T, as nn.Linear does) on a GEMV path that sums over K
        // in another order than the blocked GEMM used for a batch: the same comparison as above must see the difference.
        using var normal = ComputeSettings.UseBatchInvariant(false);
        var rows = Tensor.Randn(DType.Float32, 201, 16, K);
        var weight = Tensor.Randn(DType.Float32, 202, 64, K); // [out, in]
        var batch = Matmul.Forward(rows, weight.T());
        var differing = Enumerable.Range(0, 16)
            .Count(r => !Matmul.Forward(rows.Narrow(0, r, 1), weight.T()).BitwiseEquals(batch.Narrow(0, r, 1).Contiguous()));
        Assert.True(differing > 0, "normal mode gave batch-invariant rows: the invariance check could not fail here");

        using var invariant = ComputeSettings.UseBatchInvariant();
        var batchInv = Matmul.Forward(rows, weight.T());
        for (int r = 0; r < 16; r++)
            Assert.True(Matmul.Forward(rows.Narrow(0, r, 1), weight.T()).BitwiseEquals(batchInv.Narrow(0, r, 1).Contiguous()), $"row {r}");
    }

    // TwoD: [B, K] x [K, N]; ThreeD: [B, 1, K] x [K, N] (batch dim folded); FourDxThreeD: [1, 2, B, K] x [2, K, N].
    private static Tensor Run(Layout layout, Tensor rows, Tensor weight) => layout switch
    {
        Layout.TwoD => Matmul.Forward(rows, weight.Select(0, 0)),
        Layout.ThreeD => Matmul.Forward(rows.Unsqueeze(1), weight.Select(0, 1)),
        Layout.FourDxThreeD => Matmul.Forward(rows.Unsqueeze(0).Unsqueeze(0).Expand(1, 2, rows.Shape[0], K), weight),
        _ => throw new ArgumentOutOfRangeException(nameof(layout)),
    };

    private static Tensor RowOf(Layout layout, Tensor output, int position) => layout switch
    {
        Layout.TwoD => output.Select(0, position),
        Layout.ThreeD => output.Select(0, position).Select(0, 0),
        Layout.FourDxThreeD => output.Select(0, 0).Select(1, position), // [2, N]: both weight batches
        _ => throw new ArgumentOutOfRangeException(nameof(layout)),
    };

    private static int FirstDifference(Tensor a, Tensor b)
    {
        var x = a.ToBytes();
        var y = b.ToBytes();
        for (int i = 0; i < x.Length; i++) if (x[i] != y[i]) return i / a.DType.Size();
        return -1;
    }
}
