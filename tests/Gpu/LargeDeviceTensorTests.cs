using Harness.Engine.Cuda;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using static Harness.Tests.Correctness.IO.SparseE4bTable;

namespace Harness.Tests.Gpu;

/// <summary>
/// Issue 22 on the GPU: Gemma3n-E4B text (TP=2) and Gemma4-E2B text (TP=1) at their published dimensions stopped at load
/// on the H200 with "device tensor of 4697620480 bytes exceeds the 2^31-byte storage limit": the per-layer table
/// (262144 x 35 x 256, bf16, 4.7 GB at E4B) went to the device as one tensor, and device tensors stopped at 2^31 bytes.
/// Here the same table (a sparse file: <see cref="Harness.Tests.Correctness.IO.SparseE4bTable"/>) goes to the device
/// whole at TP=1, and rank 1's half (2.35 GB) at TP=2, and the lookups read the planted values right past 2^31 elements
/// and 2^32 bytes, where a 32-bit offset would read the decoy.
/// </summary>
[Trait("Category", "GPU")]
public sealed class LargeDeviceTensorTests
{
    [Fact]
    public void The_whole_4_7_GB_per_layer_table_goes_to_the_device_and_a_lookup_reads_past_2_pow_32_bytes()
    {
        var device = GpuTests.RequireGpu();
        string folder = Directory.CreateTempSubdirectory("harness-e4b-table-").FullName;
        try
        {
            using var checkpoint = Checkpoint.Open(Write(folder));
            var weights = new DeviceWeights(new CheckpointWeights(checkpoint), device);
            var embedding = VocabParallelEmbedding.Load(weights, Table[..^".weight".Length], new SingleProcessGroup());
            Assert.True(embedding.LocalWeight.IsCuda);
            Assert.Equal((long)Rows * Cols * 2, embedding.LocalWeight.Storage.ByteLength);   // one device allocation of 4.7 GB

            var (r0, c0) = At(E0);
            var (r1, c1) = At(E1);
            var (rl, cl) = At((long)Rows * Cols - 1);
            var y = embedding.Forward(Tensor.FromArray(new long[] { r1, 0, r0, rl }, 4)).ToHost();   // [4, Cols]
            Assert.Equal(0.40625, y.At(0, c1));
            Assert.Equal(7.0, y.At(1, (int)Decoy));
            Assert.Equal(-2.25, y.At(2, c0));
            Assert.Equal(-5.5, y.At(3, cl));
            Assert.Equal(0.0, y.At(0, (int)Decoy));              // E1's row holds no decoy: a wrapped offset would read 7 there
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>
    /// The Gemma4-26B-A4B seed run (4 of its layers, fp32, TP=2, H200) stopped before the first module on both ranks:
    /// "this tensor lives on cuda:0 (2952790016 bytes of device memory) and was read on the host". Its tied 262144 x 2816
    /// float32 table went to the device whole, and the vocab shard and the lm_head's rows are views of it: a view of a
    /// storage past 2^31 - 1 bytes takes a window of it, and windows were host-only. Here a view of the 4.7 GB table's
    /// second half, taken on the device, is read and copied there.
    /// </summary>
    [Fact]
    public void A_view_of_rows_past_2_pow_31_bytes_of_a_whole_device_table_is_a_device_window()
    {
        var device = GpuTests.RequireGpu();
        string folder = Directory.CreateTempSubdirectory("harness-e4b-table-").FullName;
        try
        {
            using var checkpoint = Checkpoint.Open(Write(folder));
            var whole = new DeviceWeights(new CheckpointWeights(checkpoint), device).Get(Table);       // [262144, 8960], 4.7 GB
            var half = whole.Narrow(0, Rows / 2, Rows / 2);                                          // rank 1's rows, a view
            Assert.True(half.IsCuda);
            var (r1, c1) = At(E1);
            var (rl, cl) = At((long)Rows * Cols - 1);
            var rows = CudaOps.IndexSelect(half, 0, [r1 - Rows / 2, 0, rl - Rows / 2]).ToHost();     // [3, Cols]
            Assert.Equal(0.40625, rows.At(0, c1));
            Assert.Equal(-5.5, rows.At(2, cl));
            var copy = half.Narrow(0, r1 - Rows / 2, 1).Contiguous().ToHost();                     // ParallelLMHead copies its rows so
            Assert.Equal(0.40625, copy.At(0, c1));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Fact]
    public void Rank_1_of_2_takes_its_2_35_GB_half_to_the_device_and_gathers_its_rows_with_other_ranks_rows_zero()
    {
        var device = GpuTests.RequireGpu();
        string folder = Directory.CreateTempSubdirectory("harness-e4b-table-").FullName;
        try
        {
            using var checkpoint = Checkpoint.Open(Write(folder));
            var shard = new DeviceWeights(new CheckpointWeights(checkpoint), device).GetRows(Table, Rows / 2, Rows / 2);   // [131072, 8960]
            Assert.True(shard.IsCuda);
            Assert.Equal((long)Rows / 2 * Cols * 2, shard.Storage.ByteLength);           // past 2^31 bytes

            var (r1, c1) = At(E1);
            var (rl, cl) = At((long)Rows * Cols - 1);
            var (_, cm) = At((long)Rows / 2 * Cols);
            // local ids as VocabParallelEmbedding hands them: -1 for a row another rank holds
            var rows = CudaOps.IndexSelect(shard, 0, [r1 - Rows / 2, -1, 0, rl - Rows / 2]).ToHost();   // [4, Cols]
            Assert.Equal(0.40625, rows.At(0, c1));
            Assert.Equal(0.0, rows.At(1, 0));
            Assert.Equal(3.75, rows.At(2, cm));
            Assert.Equal(-5.5, rows.At(3, cl));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
