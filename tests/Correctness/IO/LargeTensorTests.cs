using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.IO.SparseE4bTable;

namespace Harness.Tests.Correctness.IO;

/// <summary>
/// Issue 22: "tensor 'model.embed_tokens_per_layer.weight': 4026531840 bytes exceeds the engine's per-tensor storage
/// limit of 2147483647 bytes". A checkpoint tensor past 4 GiB (Gemma3n-E4B's per-layer table, 262144 x 35 x 256 in bf16:
/// 2^31 + 201326592 elements, 4.7 GB) loads as a view of the memory-mapped file: no copy, no allocation of its size, and
/// elements past 2^31 (bytes past 2^32) read right. The file is sparse (a few values planted), so the test writes 4.7 GB
/// of holes in milliseconds and reading it touches a handful of pages. Serial: it measures the process's memory.
/// </summary>
[Collection(SerialCollection.Name)]
public class LargeTensorTests
{
    private static long ResidentBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0]) * 1024;
        throw new InvalidOperationException("no VmRSS in /proc/self/status");
    }

    [Fact]
    public void A_4_7_GB_table_maps_without_a_copy_and_reads_right_past_2_pow_31_elements_and_2_pow_32_bytes()
    {
        using var dir = new TempDir();
        string folder = SparseE4bTable.Write(dir.Path);
        long rssBefore = ResidentBytes();
        long allocBefore = GC.GetAllocatedBytesForCurrentThread();

        using var checkpoint = Checkpoint.Open(folder);
        var table = checkpoint.GetTensor(Table);
        Assert.Equal([Rows, Cols], table.ShapeArray);
        Assert.Equal((long)Rows * Cols, table.ElementCount);
        Assert.True(table.ElementCount > int.MaxValue);
        Assert.Equal((long)Rows * Cols * 2, table.Storage.ByteLength);       // the whole table, as one mapped storage
        Assert.True(table.Storage.IsNative);

        // every planted value, by index; E1's 32-bit wrap would read the decoy (7) instead
        foreach (var (e, v) in Planted)
        {
            var (r, c) = At(e);
            Assert.Equal(v, table.At(r, c));
        }
        Assert.NotEqual(table.At(At(Decoy).Row, At(Decoy).Col), table.At(At(E1).Row, At(E1).Col));

        // a row past 2^31 elements is a view of just its bytes: a window the kernels index with int offsets
        var (r1, c1) = At(E1);
        var row = table.Select(0, r1);
        Assert.Equal(Cols * 2L, row.Storage.ByteLength);
        Assert.Equal(0.40625f, row.ToFloatArray()[c1]);
        var rows = table.Narrow(0, r1 - 1, 3);                                 // [3, Cols] across the planted row
        Assert.Equal(0.40625, rows.At(1, c1));
        Assert.Equal(0, rows.At(0, c1));

        // an embedding lookup reads only the looked-up rows: its allocation is the output, not the table
        var (r0, c0) = At(E0);
        var (rl, cl) = At((long)Rows * Cols - 1);
        long allocLookup = GC.GetAllocatedBytesForCurrentThread();
        var looked = Embedding.Lookup(table, Tensor.FromArray(new long[] { r1, 0, r0, rl }, 4));   // [4, Cols]
        long lookupAlloc = GC.GetAllocatedBytesForCurrentThread() - allocLookup;
        Assert.InRange(lookupAlloc, 4L * Cols * 2, 4L * Cols * 2 + 64 * 1024);
        Assert.Equal(0.40625, looked.At(0, c1));
        Assert.Equal(7.0, looked.At(1, (int)Decoy));
        Assert.Equal(-2.25, looked.At(2, c0));
        Assert.Equal(-5.5, looked.At(3, cl));

        // the whole 4.7 GB never came into this process: far under its size allocated, far under it resident
        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocBefore;
        Assert.True(allocated < 4 << 20, $"loading and reading the table allocated {allocated} bytes");
        long grown = ResidentBytes() - rssBefore;
        Assert.True(grown < 256L << 20, $"resident memory grew by {grown} bytes while reading a {table.Storage.ByteLength}-byte mapped table");

        // an op over all 2^31 + 201326592 elements at once says what to do instead of wrapping an int
        var tooMany = Assert.Throws<InvalidOperationException>(() => table.NumEl);
        Assert.Contains("take a view of it first", tooMany.Message);
        Assert.Contains("2348810240 elements", tooMany.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void A_rank_maps_only_its_own_rows_of_a_vocab_parallel_table_past_4_GiB(int tp)
    {
        using var dir = new TempDir();
        string folder = SparseE4bTable.Write(dir.Path);
        var (r1, c1) = At(E1);
        var (rm, cm) = At((long)Rows / 2 * Cols);
        var results = ThreadWorld.Run(tp, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, tp, 1);
            using var checkpoint = Checkpoint.Open(folder);
            long before = GC.GetAllocatedBytesForCurrentThread();
            var embedding = VocabParallelEmbedding.Load(new CheckpointWeights(checkpoint), Table[..^".weight".Length], ctx.Tp);
            long loadAlloc = GC.GetAllocatedBytesForCurrentThread() - before;
            // ids from both halves: row 0 (rank 0), the middle row (rank 1's first), E1's row (rank 1)
            var y = embedding.Forward(Tensor.FromArray(new long[] { 0, rm, r1 }, 3));
            return (embedding.Start, embedding.LocalWeight.Storage.ByteLength, loadAlloc, Y: y);
        }, TimeSpan.FromSeconds(60));
        for (int rank = 0; rank < tp; rank++)
        {
            var (start, mapped, loadAlloc, y) = results[rank];
            Assert.Equal(rank * Rows / tp, start);
            Assert.Equal((long)Rows / tp * Cols * 2, mapped);              // its share of the mapping (at TP=2 not the table)
            Assert.True(loadAlloc < 1 << 20, $"rank {rank} allocated {loadAlloc} bytes loading its shard");
            Assert.Equal(1.5, y.At(0, 0));
            Assert.Equal(3.75, y.At(1, cm));
            Assert.Equal(0.40625, y.At(2, c1));
        }
    }

    /// <summary>An <see cref="IWeightSource"/> that can only hand out whole tensors: the load before issue 22.</summary>
    private sealed class WholeTensorsOnly(IWeightSource inner) : IWeightSource
    {
        public bool Contains(string name) => inner.Contains(name);
        public Tensor Get(string name) => inner.Get(name);
    }

    [Fact]
    public void The_pages_of_a_4_7_GB_mapped_table_are_given_back_whole_once_it_is_on_a_device()
    {
        // Found on the GPU (H100): giving back a weight's mapped pages once it went to the device (DeviceWeights) asked the
        // view's int element count, and Gemma3n-E4B's 262144 x 8960 per-layer table (2^31 + 201326592 elements, whole at
        // TP=1 and as a rank's rows at TP=2) stopped the load: "tensor of shape [262144, 8960] has 2348810240 elements,
        // more than one kernel pass indexes". The span is counted in 64 bits: the table's pages past 2^32 bytes go too.
        using var dir = new TempDir();
        using var checkpoint = Checkpoint.Open(SparseE4bTable.Write(dir.Path));
        var table = checkpoint.GetTensor(Table);
        foreach (var (e, v) in Planted) Assert.Equal(v, table.At(At(e).Row, At(e).Col));   // its planted pages now resident
        long page = Environment.SystemPageSize, bytes = (long)Rows * Cols * 2;
        long released = MappedPages.Release(table);
        Assert.InRange(released, bytes - 2 * page, bytes);                                   // all but the two end pages
        foreach (var (e, v) in Planted) Assert.Equal(v, table.At(At(e).Row, At(e).Col));   // read again from the file
        var half = table.Narrow(0, Rows / 2, Rows / 2);                                      // rank 1's rows at TP=2
        Assert.InRange(MappedPages.Release(half), bytes / 2 - 2 * page, bytes / 2);
    }

    [Fact]
    public void A_rank_converts_only_its_own_rows_of_a_vocab_parallel_table_and_the_whole_table_load_fails_that_check()
    {
        // bf16 table run in float32 (from_pretrained(dtype=float32) of a bf16 checkpoint): each of 4 ranks converts
        // its quarter. The load that converted the whole table and then took the shard is planted and caught.
        const int vocab = 4096, hidden = 512, tp = 4;
        using var dir = new TempDir();
        var table = Tensor.Normal(DType.BFloat16, 5, 0, 1, vocab, hidden);
        SafetensorsWriter.Save(Path.Combine(dir.Path, "model.safetensors"), new Dictionary<string, Tensor> { ["embed.weight"] = table });
        long shardF32 = (long)vocab / tp * hidden * 4, wholeF32 = (long)vocab * hidden * 4;

        (long Alloc, Tensor Local)[] Load(Func<IWeightSource, IWeightSource> source) => ThreadWorld.Run(tp, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, tp, 1);
            using var checkpoint = Checkpoint.Open(dir.Path);
            var weights = source(new CheckpointWeights(checkpoint, DType.Float32));
            long before = GC.GetAllocatedBytesForCurrentThread();
            var local = VocabParallelEmbedding.Load(weights, "embed", ctx.Tp).LocalWeight;
            return (GC.GetAllocatedBytesForCurrentThread() - before, local);
        }, TimeSpan.FromSeconds(60));

        var ranks = Load(w => w);
        for (int rank = 0; rank < tp; rank++)
        {
            var (alloc, local) = ranks[rank];
            Assert.InRange(alloc, shardF32, shardF32 + 256 * 1024);
            Assert.Equal(DType.Float32, local.DType);
            Assert.Equal(table.Narrow(0, rank * vocab / tp, vocab / tp).ToFloatArray(), local.ToFloatArray());
        }
        // planted: the whole-table load allocates the whole table in float32 on every rank
        var whole = Load(w => new WholeTensorsOnly(w));
        for (int rank = 0; rank < tp; rank++)
        {
            Assert.True(whole[rank].Alloc >= wholeF32, $"the whole-table load allocated {whole[rank].Alloc} bytes on rank {rank}");
            Assert.False(whole[rank].Alloc <= shardF32 + 256 * 1024, "the shard bound would not catch the whole-table load");
            Assert.Equal(ranks[rank].Local.ToFloatArray(), whole[rank].Local.ToFloatArray());
        }
    }

    [Fact]
    public void A_float32_table_past_2_pow_31_bytes_reads_as_one_span_gemma4_26b_a4b_at_dtype_bf16()
    {
        // Found on the GPU (H100): Gemma4-26B-A4B's tied 262144 x 2816 float32 table (738 M elements, 2.95 GB) read at
        // `--dtype bf16` ended "rank 0 before the first module: OverflowException: Arithmetic operation resulted in an
        // overflow": converting it whole takes it as one Span<float> (738 M elements, under 2^31) whose byte length was
        // computed as an int. Here 131072 x 4100 float32 (537 M elements, 2.15 GB, sparse) with values planted before and
        // past byte 2^31 and at the last element, read through the span the conversion reads.
        const int rows = 131_072, cols = 4100;
        long n = (long)rows * cols, past = (1L << 31) / 4 + 5;
        (long Element, float Value)[] planted = [(0, 1.5f), (past, -2.25f), (n - 1, 3.75f)];
        using var dir = new TempDir();
        string json = $"{{\"t\":{{\"dtype\":\"F32\",\"shape\":[{rows},{cols}],\"data_offsets\":[0,{n * 4}]}}}}";
        while (json.Length % 8 != 0) json += " ";
        var header = System.Text.Encoding.UTF8.GetBytes(json);
        using (var fs = new FileStream(Path.Combine(dir.Path, "model.safetensors"), FileMode.CreateNew, FileAccess.Write))
        {
            fs.SetLength(8 + header.Length + n * 4);                                   // holes
            RandomAccess.Write(fs.SafeFileHandle, BitConverter.GetBytes((ulong)header.Length), 0);
            RandomAccess.Write(fs.SafeFileHandle, header, 8);
            foreach (var (e, v) in planted) RandomAccess.Write(fs.SafeFileHandle, BitConverter.GetBytes(v), 8 + header.Length + 4 * e);
        }
        using var checkpoint = Checkpoint.Open(dir.Path);
        var table = new CheckpointWeights(checkpoint).Get("t");                            // the mapped file, no copy
        var values = table.Span<float>();
        Assert.Equal(n, values.Length);
        foreach (var (e, v) in planted) Assert.Equal(v, values[checked((int)e)]);
        Assert.Equal(0f, values[(int)past - 1]);
        var rows2 = table.Narrow(0, rows - 2, 2).To(DType.BFloat16);                     // a conversion of rows past 2^31 bytes
        Assert.Equal(3.75f, BFloat16.ToFloat(rows2.Span<ushort>()[2 * cols - 1]));
    }
}
