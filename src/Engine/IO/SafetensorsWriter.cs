using System.Globalization;
using System.Text;
using Harness.Engine.Tensors;

namespace Harness.Engine.IO;

/// <summary>
/// Writes safetensors files byte-identical to the reference (Rust crate, as used by <c>safetensors.torch.save_file</c>):
/// <list type="bullet">
/// <item>tensors laid out by dtype rank descending (the crate's Dtype enum order: I64, F32, I32, BF16, F16, BOOL),
/// then by name in UTF-8 byte order; the header lists them in that order, "__metadata__" first;</item>
/// <item>compact JSON (serde_json's escaping: only '"', '\\' and control characters are escaped);</item>
/// <item>the header padded with spaces to a multiple of 8 bytes.</item>
/// </list>
/// One difference: the crate keeps metadata in a hash map, so python writes several metadata keys in a random order;
/// we write them sorted by key. With zero or one key the files are identical.
/// </summary>
public static class SafetensorsWriter
{
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var bytes = Serialize(tensors, metadata, out var order);
        // Write beside the target and rename (AtomicFile): a file that is currently mapped (MAP_PRIVATE) must not change
        // under its readers, and a crash mid-write leaves the previous file intact.
        AtomicFile.Write(path, fs =>
        {
            fs.Write(bytes);
            foreach (var (_, t) in order)
            {
                if (t.ElementCount == 0) continue;
                var c = t.Contiguous();
                int es = c.DType.Size();
                // by piece, at 64-bit offsets: a mapped tensor may pass 2 GiB
                long from = (long)c.Offset * es, bytes = c.ElementCount * es;
                for (long done = 0; done < bytes; done += 1 << 26)
                    fs.Write(c.Storage.Span(from + done, (int)Math.Min(1 << 26, bytes - done)));
            }
        });
    }

    /// <summary>The whole file as bytes (header and data), for small tensors and tests.</summary>
    public static byte[] ToBytes(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = Serialize(tensors, metadata, out var order);
        using var ms = new MemoryStream();
        ms.Write(header);
        foreach (var (_, t) in order) ms.Write(t.ToBytes());
        return ms.ToArray();
    }

    /// <summary>The 8-byte prefix plus the padded header; <paramref name="order"/> is the data layout order.</summary>
    private static byte[] Serialize(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata,
        out List<(string Name, Tensor Tensor)> order)
    {
        foreach (var (name, t) in tensors)
        {
            if (name == "__metadata__") throw new ArgumentException("\"__metadata__\" is reserved and cannot name a tensor", nameof(tensors));
            ArgumentNullException.ThrowIfNull(t, $"tensors[\"{name}\"]");
            _ = SafetensorsDType.Name(t.DType);
        }
        order = tensors
            .Select(kv => (Name: kv.Key, Tensor: kv.Value, Utf8: Encoding.UTF8.GetBytes(kv.Key)))
            .OrderByDescending(x => SafetensorsDType.LayoutRank(x.Tensor.DType))
            .ThenBy(x => x.Utf8, Utf8Order.Instance)
            .Select(x => (x.Name, x.Tensor))
            .ToList();

        var sb = new StringBuilder("{");
        bool first = true;
        if (metadata is not null)
        {
            sb.Append("\"__metadata__\":{");
            bool firstKey = true;
            foreach (var key in metadata.Keys.OrderBy(k => Encoding.UTF8.GetBytes(k), Utf8Order.Instance))
            {
                if (!firstKey) sb.Append(',');
                firstKey = false;
                AppendString(sb, key);
                sb.Append(':');
                AppendString(sb, metadata[key]);
            }
            sb.Append('}');
            first = false;
        }
        long offset = 0;
        foreach (var (name, t) in order)
        {
            if (!first) sb.Append(',');
            first = false;
            long size = (long)t.NumEl * t.DType.Size();
            AppendString(sb, name);
            sb.Append(":{\"dtype\":\"").Append(SafetensorsDType.Name(t.DType)).Append("\",\"shape\":[");
            for (int i = 0; i < t.Rank; i++)
            {
                if (i > 0) sb.Append(',');
                sb.Append(t.Shape[i].ToString(CultureInfo.InvariantCulture));
            }
            sb.Append("],\"data_offsets\":[")
              .Append(offset.ToString(CultureInfo.InvariantCulture)).Append(',')
              .Append((offset + size).ToString(CultureInfo.InvariantCulture)).Append("]}");
            offset += size;
        }
        sb.Append('}');
        int n = Encoding.UTF8.GetByteCount(sb.ToString());
        int pad = (8 - n % 8) % 8;
        sb.Append(' ', pad);
        var json = Encoding.UTF8.GetBytes(sb.ToString());
        var result = new byte[8 + json.Length];
        BitConverter.TryWriteBytes(result.AsSpan(0, 8), (ulong)json.Length);
        if (!BitConverter.IsLittleEndian) result.AsSpan(0, 8).Reverse();
        json.CopyTo(result, 8);
        return result;
    }

    /// <summary>A JSON string as serde_json writes it: \" \\ \b \f \n \r \t, other controls as \u00xx, the rest raw.</summary>
    private static void AppendString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20) sb.Append("\\u00").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    private sealed class Utf8Order : IComparer<byte[]>
    {
        public static readonly Utf8Order Instance = new();
        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }
}
