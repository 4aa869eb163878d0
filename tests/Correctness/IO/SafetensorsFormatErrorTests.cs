using System.Text;
using Harness.Engine.IO;

namespace Harness.Tests.Correctness.IO;

/// <summary>
/// Each corrupt file the reader must refuse, written to a temp dir: the message names the file, the tensor at fault
/// and the offending values.
/// </summary>
public class SafetensorsFormatErrorTests
{
    /// <summary>Writes 8-byte length + header (padded with spaces to 8) + dataLength bytes of data.</summary>
    private static string WriteRaw(TempDir dir, string header, int dataLength, string name = "corrupt.safetensors")
    {
        var json = Encoding.UTF8.GetBytes(header);
        return WriteRawBytes(dir, json, dataLength, name);
    }

    private static string WriteRawBytes(TempDir dir, byte[] header, int dataLength, string name = "corrupt.safetensors")
    {
        int pad = (8 - header.Length % 8) % 8;
        var bytes = new byte[8 + header.Length + pad + dataLength];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)(header.Length + pad));
        header.CopyTo(bytes, 8);
        bytes.AsSpan(8 + header.Length, pad).Fill((byte)' ');
        string path = dir.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static SafetensorsFormatException Refused(string path)
    {
        var e = Assert.Throws<SafetensorsFormatException>(() => { using var f = SafetensorsFile.Open(path); });
        Assert.Contains(Path.GetFileName(path), e.Message);
        Assert.Equal(Path.GetFullPath(path), e.Path);
        return e;
    }

    private static void AssertTensorNamed(SafetensorsFormatException e, string tensor)
    {
        Assert.Equal(tensor, e.TensorName);
        Assert.Contains($"'{tensor}'", e.Message);
    }

    [Fact]
    public void A_file_shorter_than_the_8_byte_prefix_is_refused()
    {
        using var dir = new TempDir();
        string path = dir.File("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        var e = Refused(path);
        Assert.Null(e.TensorName);
        Assert.Contains("3 bytes", e.Message);
    }

    [Fact]
    public void An_empty_file_is_refused()
    {
        using var dir = new TempDir();
        string path = dir.File("empty.safetensors");
        File.WriteAllBytes(path, []);
        Assert.Contains("0 bytes", Refused(path).Message);
    }

    [Fact]
    public void A_header_length_past_the_end_of_the_file_is_refused()
    {
        using var dir = new TempDir();
        string path = dir.File("trunc.safetensors");
        var bytes = new byte[8 + 10];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), 500UL);
        File.WriteAllBytes(path, bytes);
        var e = Refused(path);
        Assert.Contains("header length 500", e.Message);
        Assert.Contains("18 bytes", e.Message);
    }

    [Fact]
    public void An_absurd_header_length_is_refused_before_reading_it()
    {
        using var dir = new TempDir();
        string path = dir.File("absurd.safetensors");
        var bytes = new byte[16];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), 0x7FFF_FFFF_FFFF_FFFFUL);
        File.WriteAllBytes(path, bytes);
        var e = Refused(path);
        Assert.Contains(0x7FFF_FFFF_FFFF_FFFFUL.ToString(), e.Message);
        Assert.Contains("absurdly large", e.Message);
    }

    [Fact]
    public void A_header_that_is_not_json_is_refused()
    {
        using var dir = new TempDir();
        Assert.Contains("not valid UTF-8 JSON", Refused(WriteRaw(dir, "{\"a\": {\"dtype\": \"F32\",", 0)).Message);
    }

    [Fact]
    public void A_header_that_is_not_utf8_is_refused()
    {
        using var dir = new TempDir();
        byte[] header = [.. Encoding.UTF8.GetBytes("{\"a"), 0xFF, 0xFE, .. Encoding.UTF8.GetBytes("\":{}}")];
        var e = Refused(WriteRawBytes(dir, header, 0));
        Assert.Contains("not valid UTF-8", e.Message);
    }

    [Fact]
    public void A_header_that_is_a_json_array_is_refused()
    {
        using var dir = new TempDir();
        Assert.Contains("JSON array", Refused(WriteRaw(dir, "[1, 2, 3]", 0)).Message);
    }

    [Theory]
    [InlineData("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "no \"dtype\"")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "no \"shape\"")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", "no \"data_offsets\"")]
    [InlineData("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", "\"dtype\" must be a string, but is 32")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", "\"shape\" must be an array")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "non-integer dimension 1.5")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", "must be an array [begin, end]")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", "two non-negative integers")]
    [InlineData("{\"w\":[0,4]}", "entry must be an object")]
    public void An_entry_with_missing_or_mistyped_fields_is_refused(string header, string expected)
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, header, 4));
        AssertTensorNamed(e, "w");
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("U64", "unsupported")]
    [InlineData("I8", "unsupported")]
    [InlineData("F8_E4M3", "unsupported")]
    [InlineData("float32", "unknown")]
    public void An_unsupported_dtype_is_named_with_the_supported_list(string dtype, string kind)
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, $"{{\"w\":{{\"dtype\":\"{dtype}\",\"shape\":[1],\"data_offsets\":[0,8]}}}}", 8));
        AssertTensorNamed(e, "w");
        Assert.Contains($"{kind} dtype \"{dtype}\"", e.Message);
        Assert.Contains("supported: F32, BF16, F16, I64, I32, BOOL", e.Message);
    }

    [Fact]
    public void A_negative_dimension_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24));
        AssertTensorNamed(e, "w");
        Assert.Contains("negative dimension -3", e.Message);
    }

    [Fact]
    public void A_byte_range_that_does_not_match_the_shape_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24));
        AssertTensorNamed(e, "w");
        Assert.Contains("span 24 bytes, but BF16 [2, 3] needs 6 x 2 = 12 bytes", e.Message);
    }

    [Fact]
    public void A_byte_range_past_the_end_of_the_data_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 12));
        AssertTensorNamed(e, "w");
        Assert.Contains("[8, 24] run past the end of the data buffer (12 bytes", e.Message);
    }

    [Fact]
    public void Begin_after_end_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8));
        AssertTensorNamed(e, "w");
        Assert.Contains("[8, 4]: begin is after end", e.Message);
    }

    [Fact]
    public void Overlapping_tensors_are_refused_naming_both()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir,
            "{\"first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"second\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12));
        AssertTensorNamed(e, "second");
        Assert.Contains("[4, 12] overlap tensor 'first' at [0, 8]", e.Message);
    }

    [Fact]
    public void A_hole_between_tensors_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir,
            "{\"first\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"second\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12));
        AssertTensorNamed(e, "second");
        Assert.Contains("hole in the data buffer: bytes [4, 8)", e.Message);
    }

    [Fact]
    public void A_hole_before_the_first_tensor_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, "{\"only\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8));
        AssertTensorNamed(e, "only");
        Assert.Contains("bytes [0, 4)", e.Message);
    }

    [Fact]
    public void Trailing_data_that_no_tensor_covers_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, "{\"last\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 10));
        AssertTensorNamed(e, "last");
        Assert.Contains("cover bytes [0, 4) of a 10-byte data buffer: 6 trailing bytes", e.Message);
    }

    [Fact]
    public void A_duplicate_tensor_name_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir,
            "{\"dup\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"dup\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8));
        AssertTensorNamed(e, "dup");
        Assert.Contains("duplicate tensor name", e.Message);
    }

    [Fact]
    public void Metadata_with_a_non_string_value_is_refused()
    {
        using var dir = new TempDir();
        var e = Refused(WriteRaw(dir, "{\"__metadata__\":{\"format\":1}}", 0));
        Assert.Contains("\"__metadata__\".\"format\" must be a string", e.Message);
    }

    [Fact]
    public void A_valid_hand_made_file_with_zero_sized_tensors_sharing_an_offset_opens()
    {
        using var dir = new TempDir();
        string path = WriteRaw(dir,
            "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[4,6]}}", 6);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(["e", "a", "b"], f.Names);
        Assert.Equal(0, f.GetTensor("e").NumEl);
    }
}
