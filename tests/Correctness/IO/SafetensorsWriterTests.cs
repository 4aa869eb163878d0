using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.IO;

public class SafetensorsWriterTests
{
    private static string Reference => IoFixtures.Path_("safetensors", "reference.safetensors");

    [Fact]
    public void Rewriting_the_reference_tensors_gives_pythons_file_byte_for_byte()
    {
        using var dir = new TempDir();
        string ours = dir.File("ours.safetensors");
        using (var f = SafetensorsFile.Open(Reference))
        {
            // Hand the tensors over in a different order from the file's: the writer's layout must not depend on it.
            var tensors = f.Names.Reverse().ToDictionary(n => n, f.GetTensor);
            SafetensorsWriter.Save(ours, tensors, f.Metadata);
        }
        Assert.Equal(File.ReadAllBytes(Reference), File.ReadAllBytes(ours));
    }

    [Fact]
    public void Tensors_built_from_the_generator_values_serialize_to_pythons_bytes()
    {
        float[] bf = [.. Enumerable.Range(0, 7).Select(k => k / 3.0f + 1.0f), 1.0f + MathF.Pow(2, -8)];
        var tensors = new Dictionary<string, Tensor>
        {
            ["z_f32"] = Tensor.FromArray([-1f, -0.5f, 0f, 0.5f, 1f, 1.5f], 2, 3),
            ["a_i32"] = Tensor.FromArray([-3, -2, -1, 0, 1, 2], 3, 2),
            ["z_bf16"] = Tensor.FromArray(bf, 2, 4).To(DType.BFloat16),
            ["a_f16"] = Tensor.FromArray([.. Enumerable.Range(0, 5).Select(k => (Half)(k / 7.0f - 0.25f))], 5),
            ["m_i64"] = Tensor.FromArray([.. Enumerable.Range(0, 4).Select(k => k * 10_000_000_000L - 7)], 4),
            ["b_bool"] = Tensor.FromArray([true, false, false, true, true], 5),
            ["scalar_f32"] = Tensor.Scalar(3.25),
            ["empty_f32"] = Tensor.Zeros(DType.Float32, 0, 3),
        };
        var bytes = SafetensorsWriter.ToBytes(tensors, new Dictionary<string, string> { ["format"] = "pt" });
        Assert.Equal(File.ReadAllBytes(Reference), bytes);
    }

    [Fact]
    public void Non_contiguous_tensors_are_written_as_contiguous_copies()
    {
        using var dir = new TempDir();
        string path = dir.File("t.safetensors");
        var x = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], 2, 3);
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["xt"] = x.T(), ["row"] = x.Select(0, 1) });
        using var f = SafetensorsFile.Open(path);
        Assert.Equal([3, 2], f.GetTensor("xt").ShapeArray);
        Assert.Equal([1f, 4f, 2f, 5f, 3f, 6f], f.GetTensor("xt").ToFloatArray());
        Assert.Equal([4f, 5f, 6f], f.GetTensor("row").ToFloatArray());
        Assert.Empty(f.Metadata);
    }

    [Fact]
    public void The_header_is_space_padded_to_a_multiple_of_8_and_names_are_escaped_as_serde_json_does()
    {
        var bytes = SafetensorsWriter.ToBytes(new Dictionary<string, Tensor> { ["a\"\n\u0001é"] = Tensor.Zeros(DType.Float32, 1) });
        long n = BitConverter.ToInt64(bytes, 0);
        Assert.Equal(0, n % 8);
        string header = System.Text.Encoding.UTF8.GetString(bytes, 8, (int)n);
        // python: save({"a\"\n\x01é": torch.zeros(1)}) -> {"a\"\n\u0001é":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}
        Assert.Equal("{\"a\\\"\\n\\u0001é\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", header.TrimEnd(' '));
        Assert.EndsWith(" ", header);
    }

    [Fact]
    public void Saving_over_a_file_that_is_still_mapped_leaves_the_old_tensors_intact()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["w"] = Tensor.FromArray([1f, 2f], 2) });
        using var f = SafetensorsFile.Open(path);
        var old = f.GetTensor("w");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["w"] = Tensor.FromArray([7f, 8f], 2) });
        Assert.Equal([1f, 2f], old.ToFloatArray());
        using var g = SafetensorsFile.Open(path);
        Assert.Equal([7f, 8f], g.GetTensor("w").ToFloatArray());
    }
}
