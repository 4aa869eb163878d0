using System.Text.Json;
using Harness.Engine.Tensors;

namespace Harness.Engine.IO;

/// <summary>
/// Parses and validates a safetensors header the way the reference (Rust) implementation does, with messages that
/// name the file, the tensor and the values at fault.
/// </summary>
internal static class SafetensorsHeader
{
    /// <summary>The Rust crate's limit (MAX_HEADER_SIZE): headers above 100 MB are refused as corrupt.</summary>
    public const long MaxHeaderSize = 100_000_000;

    public sealed record Parsed(
        long HeaderLength,
        IReadOnlyList<TensorInfo> Tensors,
        Dictionary<string, TensorInfo> ByName,
        IReadOnlyDictionary<string, string> Metadata);

    /// <summary>Reads and checks the 8-byte length prefix against the file length; returns N.</summary>
    public static long CheckPrefix(string path, ReadOnlySpan<byte> prefix, long fileLength)
    {
        if (fileLength < 8)
            throw new SafetensorsFormatException(path, null,
                $"file is {fileLength} bytes, shorter than the 8-byte header length prefix (not a safetensors file, or truncated)");
        ulong n = BitConverter.ToUInt64(prefix);
        if (!BitConverter.IsLittleEndian) n = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(n);
        if (n > MaxHeaderSize)
            throw new SafetensorsFormatException(path, null,
                $"header length {n} is absurdly large (limit {MaxHeaderSize} bytes; file is {fileLength} bytes): not a safetensors file, or corrupt");
        if ((long)n > fileLength - 8)
            throw new SafetensorsFormatException(path, null,
                $"header length {n} runs past the end of the file ({fileLength} bytes, so at most {fileLength - 8} header bytes): truncated or corrupt");
        if (n < 2)
            throw new SafetensorsFormatException(path, null, $"header length {n} is too short to hold a JSON object");
        return (long)n;
    }

    public static Parsed Parse(string path, ReadOnlyMemory<byte> header, long dataLength)
    {
        if (!System.Text.Unicode.Utf8.IsValid(header.Span))
        {
            int bad = FirstInvalidUtf8(header.Span);
            throw new SafetensorsFormatException(path, null,
                $"header ({header.Length} bytes) is not valid UTF-8 JSON: invalid UTF-8 byte 0x{header.Span[bad]:X2} at header offset {bad}");
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, null,
                $"header ({header.Length} bytes) is not valid UTF-8 JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(path, null,
                    $"header must be a JSON object mapping tensor names to entries, but is a JSON {Kind(root.ValueKind)}");

            var tensors = new List<TensorInfo>();
            var byName = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var prop in root.EnumerateObject())
            {
                string name = prop.Name;
                if (name == "__metadata__")
                {
                    if (sawMetadata) throw new SafetensorsFormatException(path, null, "duplicate \"__metadata__\" entry in the header");
                    sawMetadata = true;
                    ReadMetadata(path, prop.Value, metadata);
                    continue;
                }
                if (byName.ContainsKey(name))
                    throw new SafetensorsFormatException(path, name, "duplicate tensor name in the header (the name appears twice)");
                var info = ReadEntry(path, name, prop.Value, dataLength);
                tensors.Add(info);
                byName[name] = info;
            }
            CheckCoverage(path, tensors, dataLength);
            return new Parsed(header.Length, tensors, byName, metadata);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsFormatException(path, null,
                $"\"__metadata__\" must be an object of string values, but is a JSON {Kind(value.ValueKind)}");
        foreach (var kv in value.EnumerateObject())
        {
            if (kv.Value.ValueKind != JsonValueKind.String)
                throw new SafetensorsFormatException(path, null,
                    $"\"__metadata__\".\"{kv.Name}\" must be a string, but is a JSON {Kind(kv.Value.ValueKind)} ({kv.Value.GetRawText()})");
            if (!metadata.TryAdd(kv.Name, kv.Value.GetString()!))
                throw new SafetensorsFormatException(path, null, $"duplicate key \"{kv.Name}\" in \"__metadata__\"");
        }
    }

    private static TensorInfo ReadEntry(string path, string name, JsonElement entry, long dataLength)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw new SafetensorsFormatException(path, name,
                $"entry must be an object with dtype, shape and data_offsets, but is a JSON {Kind(entry.ValueKind)} ({Clip(entry.GetRawText())})");

        if (!entry.TryGetProperty("dtype", out var dtypeEl))
            throw new SafetensorsFormatException(path, name, $"entry has no \"dtype\" ({Clip(entry.GetRawText())})");
        if (!entry.TryGetProperty("shape", out var shapeEl))
            throw new SafetensorsFormatException(path, name, $"entry has no \"shape\" ({Clip(entry.GetRawText())})");
        if (!entry.TryGetProperty("data_offsets", out var offEl))
            throw new SafetensorsFormatException(path, name, $"entry has no \"data_offsets\" ({Clip(entry.GetRawText())})");

        if (dtypeEl.ValueKind != JsonValueKind.String)
            throw new SafetensorsFormatException(path, name, $"\"dtype\" must be a string, but is {dtypeEl.GetRawText()}");
        string dtypeName = dtypeEl.GetString()!;
        if (!SafetensorsDType.TryParse(dtypeName, out var dtype))
        {
            string kind = SafetensorsDType.Defined.Contains(dtypeName) ? "unsupported" : "unknown";
            throw new SafetensorsFormatException(path, name,
                $"{kind} dtype \"{dtypeName}\" (supported: {string.Join(", ", SafetensorsDType.Supported)})");
        }

        if (shapeEl.ValueKind != JsonValueKind.Array)
            throw new SafetensorsFormatException(path, name, $"\"shape\" must be an array of integers, but is {Clip(shapeEl.GetRawText())}");
        var shape = new int[shapeEl.GetArrayLength()];
        int i = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim))
                throw new SafetensorsFormatException(path, name, $"\"shape\" {shapeEl.GetRawText()} has a non-integer dimension {d.GetRawText()}");
            if (dim < 0)
                throw new SafetensorsFormatException(path, name, $"\"shape\" {shapeEl.GetRawText()} has a negative dimension {dim}");
            if (dim > int.MaxValue)
                throw new SafetensorsFormatException(path, name, $"\"shape\" {shapeEl.GetRawText()} has dimension {dim}, above the engine's limit of {int.MaxValue}");
            shape[i++] = (int)dim;
        }

        if (offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw new SafetensorsFormatException(path, name, $"\"data_offsets\" must be an array [begin, end], but is {Clip(offEl.GetRawText())}");
        var offs = new long[2];
        i = 0;
        foreach (var o in offEl.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out long v) || v < 0)
                throw new SafetensorsFormatException(path, name,
                    $"\"data_offsets\" {offEl.GetRawText()} must hold two non-negative integers, but has {o.GetRawText()}");
            offs[i++] = v;
        }
        long begin = offs[0], end = offs[1];
        if (begin > end)
            throw new SafetensorsFormatException(path, name, $"\"data_offsets\" [{begin}, {end}]: begin is after end");

        long numel;
        long bytes;
        try
        {
            numel = 1;
            foreach (var d in shape) numel = checked(numel * d);
            bytes = checked(numel * dtype.Size());
        }
        catch (OverflowException)
        {
            throw new SafetensorsFormatException(path, name, $"shape {Tensors.Shape.Format(shape)} overflows a 64-bit byte count");
        }
        if (end - begin != bytes)
            throw new SafetensorsFormatException(path, name,
                $"\"data_offsets\" [{begin}, {end}] span {end - begin} bytes, but {dtypeName} {Tensors.Shape.Format(shape)} " +
                $"needs {numel} x {dtype.Size()} = {bytes} bytes");
        if (end > dataLength)
            throw new SafetensorsFormatException(path, name,
                $"\"data_offsets\" [{begin}, {end}] run past the end of the data buffer ({dataLength} bytes after the header): truncated file?");
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    /// <summary>The spec: the byte ranges, sorted, must tile the data buffer exactly: no overlap, no hole, no tail.</summary>
    private static void CheckCoverage(string path, List<TensorInfo> tensors, long dataLength)
    {
        var sorted = tensors.OrderBy(t => t.Begin).ThenBy(t => t.End).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        long cursor = 0;
        TensorInfo? previous = null;
        foreach (var t in sorted)
        {
            if (t.Begin < cursor)
                throw new SafetensorsFormatException(path, t.Name,
                    $"bytes [{t.Begin}, {t.End}] overlap tensor '{previous!.Name}' at [{previous.Begin}, {previous.End}]");
            if (t.Begin > cursor)
                throw new SafetensorsFormatException(path, t.Name,
                    $"hole in the data buffer: bytes [{cursor}, {t.Begin}) before this tensor (at [{t.Begin}, {t.End}]) belong to no tensor" +
                    (previous is null ? "" : $" (previous tensor '{previous.Name}' ends at {previous.End})"));
            cursor = t.End;
            if (t.End > t.Begin || previous is null) previous = t;
        }
        if (cursor != dataLength)
            throw new SafetensorsFormatException(path, previous?.Name,
                $"the tensors cover bytes [0, {cursor}) of a {dataLength}-byte data buffer: {dataLength - cursor} trailing bytes belong to no tensor");
    }

    private static int FirstInvalidUtf8(ReadOnlySpan<byte> bytes)
    {
        var status = System.Text.Unicode.Utf8.ToUtf16(bytes, new char[bytes.Length], out int read, out _, replaceInvalidSequences: false);
        return status == System.Buffers.OperationStatus.Done ? 0 : Math.Min(read, bytes.Length - 1);
    }

    private static string Kind(JsonValueKind k) => k switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => k.ToString(),
    };

    private static string Clip(string s) => s.Length <= 120 ? s : s[..117] + "...";
}
