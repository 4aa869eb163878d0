using System.Text;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.IO;

/// <summary>
/// Gemma3n-E4B's per-layer table (262144 x 35 x 256 in bf16: 2^31 + 201326592 elements, 4.7 GB) as a sparse
/// safetensors file with a few planted values, one past 2^31 elements and 2^32 bytes and a decoy where a 32-bit byte
/// offset would wrap to. Shared by the host's <c>LargeTensorTests</c> and the GPU suite's device-table test (linked into
/// tests/Gpu), so both read the same file the same way.
/// </summary>
internal static class SparseE4bTable
{
    public const int Rows = 262_144, Cols = 35 * 256;            // E4B's vocab_size_per_layer_input x (layers * 256)
    public const string Table = "model.language_model.embed_tokens_per_layer.weight";
    public const long SmallBytes = 16;                            // an F32 [4] before the table: the table starts at a non-zero offset

    // Planted values (bf16), by (row, col). E1 sits past 2^31 elements and 2^32 bytes; a 32-bit byte offset wraps onto
    // the decoy at byte (2 * E1 - 2^32) of the table, which holds another value.
    public static readonly long E0 = (1L << 30) + 3;              // byte 2^31 + 6: past a 32-bit signed byte offset
    public static readonly long E1 = (1L << 31) + 7;              // element past 2^31, byte 2^32 + 14
    public static readonly long Decoy = (2 * E1 - (1L << 32)) / 2; // element 7 of row 0
    public static readonly (long Element, float Value)[] Planted =
    [
        (0, 1.5f),
        (Decoy, 7f),
        (E0, -2.25f),
        ((long)Rows / 2 * Cols, 3.75f),                            // rank 1's first row at TP=2 (vocab 262144 splits evenly)
        (E1, 0.40625f),
        ((long)Rows * Cols - 1, -5.5f),                            // the last element
    ];

    public static (int Row, int Col) At(long element) => ((int)(element / Cols), (int)(element % Cols));

    /// <summary>A sparse safetensors file: header, an F32 [4], the bf16 table as holes except the planted values.</summary>
    public static string Write(string folder)
    {
        long tableBytes = (long)Rows * Cols * 2;
        string json = $"{{\"model.small\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,{SmallBytes}]}}," +
                      $"\"{Table}\":{{\"dtype\":\"BF16\",\"shape\":[{Rows},{Cols}],\"data_offsets\":[{SmallBytes},{SmallBytes + tableBytes}]}}}}";
        while (json.Length % 8 != 0) json += " ";
        var header = Encoding.UTF8.GetBytes(json);
        string path = Path.Combine(folder, "model.safetensors");
        using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            long dataStart = 8 + header.Length;
            fs.SetLength(dataStart + SmallBytes + tableBytes);            // holes: no disk, no page cache
            var h = fs.SafeFileHandle;
            RandomAccess.Write(h, BitConverter.GetBytes((ulong)header.Length), 0);
            RandomAccess.Write(h, header, 8);
            RandomAccess.Write(h, new byte[] { 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40 }, dataStart); // 1, 2, 3, 4
            foreach (var (e, v) in Planted)
                RandomAccess.Write(h, BitConverter.GetBytes(BFloat16.FromFloat(v)), dataStart + SmallBytes + 2 * e);
        }
        File.WriteAllText(Path.Combine(folder, "config.json"), "{}");
        return folder;
    }
}
