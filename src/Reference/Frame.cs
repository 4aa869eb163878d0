using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Engine.Tensors;

namespace Harness.Reference;

/// <summary>
/// One protocol message (PROTOCOL.md): magic "HRN1", u32 header length, JSON header, then each tensor's raw bytes.
/// </summary>
public sealed class Frame
{
    public static ReadOnlySpan<byte> Magic => "HRN1"u8;

    /// <summary>Upper bound on a JSON header, so a garbage length cannot make us allocate gigabytes.</summary>
    public const int MaxHeaderBytes = 64 << 20;

    public JsonObject Header { get; }
    public IReadOnlyList<KeyValuePair<string, Tensor>> Tensors { get; }

    public Frame(JsonObject header, IReadOnlyList<KeyValuePair<string, Tensor>> tensors)
    {
        Header = header;
        Tensors = tensors;
    }

    public Tensor? Tensor(string name) => Tensors.FirstOrDefault(t => t.Key == name).Value;

    public void WriteTo(Stream stream)
    {
        var descriptors = new JsonArray();
        var payloads = new List<byte[]>();
        foreach (var (name, t) in Tensors)
        {
            var bytes = t.ToBytes();
            payloads.Add(bytes);
            descriptors.Add((JsonNode)new JsonObject
            {
                ["name"] = name,
                ["dtype"] = t.DType.TorchName(),
                ["shape"] = new JsonArray(t.ShapeArray.Select(s => (JsonNode)JsonValue.Create(s)).ToArray()),
                ["nbytes"] = bytes.Length,
            });
        }
        Header["tensors"] = descriptors;
        var header = Encoding.UTF8.GetBytes(Header.ToJsonString());
        Span<byte> prefix = stackalloc byte[8];
        Magic.CopyTo(prefix);
        BinaryPrimitives.WriteUInt32LittleEndian(prefix[4..], (uint)header.Length);
        stream.Write(prefix);
        stream.Write(header);
        foreach (var p in payloads) stream.Write(p);
        stream.Flush();
    }

    /// <summary>Reads one frame; throws <see cref="InvalidDataException"/> on bytes that are not a frame, EndOfStreamException on EOF.</summary>
    public static Frame ReadFrom(Stream stream)
    {
        var prefix = new byte[8];
        ReadExactly(stream, prefix, allowEofAtStart: true);
        if (!prefix.AsSpan(0, 4).SequenceEqual(Magic))
        {
            // Read a little more of what came, to show it in the error.
            var more = new byte[120];
            int got = stream.ReadAtLeast(more, 0, throwOnEndOfStream: false);
            var seen = prefix.Concat(more.Take(got)).ToArray();
            throw new InvalidDataException(
                $"expected a frame starting with \"HRN1\" but got {seen.Length} bytes: \"{Printable(seen)}\" (hex {Convert.ToHexString(seen.AsSpan(0, Math.Min(16, seen.Length)))})");
        }
        uint hlen = BinaryPrimitives.ReadUInt32LittleEndian(prefix.AsSpan(4));
        if (hlen > MaxHeaderBytes) throw new InvalidDataException($"frame header of {hlen} bytes exceeds the {MaxHeaderBytes}-byte limit");
        var headerBytes = new byte[hlen];
        ReadExactly(stream, headerBytes, allowEofAtStart: false);
        JsonObject header;
        try
        {
            header = JsonNode.Parse(headerBytes) as JsonObject ?? throw new InvalidDataException("frame header is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"frame header is not valid JSON: {e.Message}: \"{Printable(headerBytes.Take(200).ToArray())}\"");
        }
        var tensors = new List<KeyValuePair<string, Tensor>>();
        if (header["tensors"] is JsonArray list)
        {
            foreach (var node in list)
            {
                var d = node as JsonObject ?? throw new InvalidDataException("tensor descriptor is not an object");
                string name = (string?)d["name"] ?? throw new InvalidDataException("tensor descriptor without a name");
                var dtype = DTypeInfo.Parse((string?)d["dtype"] ?? throw new InvalidDataException($"tensor '{name}' has no dtype"));
                var shape = (d["shape"] as JsonArray ?? throw new InvalidDataException($"tensor '{name}' has no shape"))
                    .Select(x => (int)x!).ToArray();
                long nbytes = (long?)d["nbytes"] ?? throw new InvalidDataException($"tensor '{name}' has no nbytes");
                long expected = Shape.NumEl(shape) * dtype.Size();
                if (nbytes != expected)
                    throw new InvalidDataException($"tensor '{name}' {dtype.TorchName()} {Shape.Format(shape)} declares {nbytes} bytes, its shape needs {expected}");
                var bytes = new byte[nbytes];
                ReadExactly(stream, bytes, allowEofAtStart: false);
                tensors.Add(new(name, Engine.Tensors.Tensor.FromBytes(bytes, dtype, shape)));
            }
        }
        return new Frame(header, tensors);
    }

    private static void ReadExactly(Stream stream, byte[] buffer, bool allowEofAtStart)
    {
        int read = 0;
        while (read < buffer.Length)
        {
            int n = stream.Read(buffer, read, buffer.Length - read);
            if (n == 0)
                throw new EndOfStreamException(read == 0 && allowEofAtStart
                    ? "the worker closed its output"
                    : $"the worker's output ended inside a frame ({read} of {buffer.Length} bytes)");
            read += n;
        }
    }

    private static string Printable(byte[] bytes) =>
        new(bytes.Select(b => b is >= 32 and < 127 ? (char)b : '.').ToArray());
}
