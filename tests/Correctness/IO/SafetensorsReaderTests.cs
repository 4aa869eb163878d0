using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.IO;

/// <summary>fixtures/io/safetensors/reference.safetensors, written by safetensors.torch.save_file (see fixtures/io/README.md).</summary>
public class SafetensorsReaderTests
{
    private static string Reference => IoFixtures.Path_("safetensors", "reference.safetensors");

    [Fact]
    public void Reference_file_lists_names_metadata_and_header_entries_as_python_wrote_them()
    {
        using var f = SafetensorsFile.Open(Reference);
        // Header order is python's layout order: I64, then F32 by name, I32, BF16, F16, BOOL.
        Assert.Equal(["m_i64", "empty_f32", "scalar_f32", "z_f32", "a_i32", "z_bf16", "a_f16", "b_bool"], f.Names);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Single(f.Metadata);
        var z = f.GetInfo("z_f32");
        Assert.Equal(DType.Float32, z.DType);
        Assert.Equal([2, 3], z.Shape);
        Assert.Equal((36L, 60L), (z.Begin, z.End));
        Assert.Equal(0, f.HeaderLength % 8);
    }

    [Fact]
    public void Reference_values_of_every_dtype_are_read_exactly()
    {
        using var f = SafetensorsFile.Open(Reference);

        var f32 = f.GetTensor("z_f32");
        Assert.Equal([2, 3], f32.ShapeArray);
        Assert.Equal([-1f, -0.5f, 0f, 0.5f, 1f, 1.5f], f32.ToFloatArray());

        var i32 = f.GetTensor("a_i32");
        Assert.Equal([3, 2], i32.ShapeArray);
        Assert.Equal([-3, -2, -1, 0, 1, 2], i32.Span<int>().ToArray());

        var i64 = f.GetTensor("m_i64");
        Assert.Equal([-7L, 9_999_999_993L, 19_999_999_993L, 29_999_999_993L], i64.Span<long>().ToArray());

        // torch rounded k/3 + 1 to bf16 (nearest-even; 1 + 2^-8 is a tie that goes to 1.0): these are its bit patterns.
        var bf16 = f.GetTensor("z_bf16");
        Assert.Equal([2, 4], bf16.ShapeArray);
        Assert.Equal(new ushort[] { 16256, 16299, 16341, 16384, 16405, 16427, 16448, 16256 }, bf16.Span<ushort>().ToArray());
        Assert.Equal([1f, 1.3359375f, 1.6640625f, 2f, 2.328125f, 2.671875f, 3f, 1f], bf16.ToFloatArray());
        // ... and our own bf16 rounding agrees with torch's on the same inputs.
        float[] src = [.. Enumerable.Range(0, 7).Select(k => k / 3.0f + 1.0f), 1.0f + MathF.Pow(2, -8)];
        Assert.Equal(bf16.Span<ushort>().ToArray(), src.Select(BFloat16.FromFloat).ToArray());

        var f16 = f.GetTensor("a_f16");
        Assert.Equal(new ushort[] { 46080, 44763, 10386, 12727, 13605 }, f16.Span<ushort>().ToArray());
        Assert.Equal(-0.25, f16.At(0));
        Assert.Equal(0.321533203125, f16.At(4));

        Assert.Equal([true, false, false, true, true], f.GetTensor("b_bool").Span<bool>().ToArray());

        var scalar = f.GetTensor("scalar_f32");
        Assert.Equal(0, scalar.Rank);
        Assert.Equal(3.25, scalar.Item());

        var empty = f.GetTensor("empty_f32");
        Assert.Equal([0, 3], empty.ShapeArray);
        Assert.Equal(0, empty.NumEl);
    }

    [Fact]
    public void Tensors_are_views_of_the_mapping_and_outlive_the_disposed_file()
    {
        Tensor t;
        using (var f = SafetensorsFile.Open(Reference))
        {
            t = f.GetTensor("z_f32");
            Assert.NotNull(t.Storage.Owner); // the mapping, kept alive by the tensor
            Assert.Throws<ObjectDisposedException>(() => { f.Dispose(); f.GetTensor("z_f32"); });
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Equal([-1f, -0.5f, 0f, 0.5f, 1f, 1.5f], t.ToFloatArray());
    }

    [Fact]
    public void Writing_into_a_mapped_tensor_never_changes_the_file()
    {
        using var dir = new TempDir();
        string path = dir.File("w.safetensors");
        File.Copy(Reference, path);
        byte[] before = File.ReadAllBytes(path);
        using (var f = SafetensorsFile.Open(path))
        {
            var t = f.GetTensor("z_f32");
            t.Fill(42);
            Assert.Equal(42, t.At(0, 0));
        }
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void ReadTensor_returns_a_managed_copy_with_the_same_bits()
    {
        using var f = SafetensorsFile.Open(Reference);
        foreach (var name in f.Names)
        {
            var copy = f.ReadTensor(name);
            Assert.Null(copy.Storage.Owner);
            Assert.True(copy.BitwiseEquals(f.GetTensor(name)), name);
        }
    }

    [Fact]
    public void Missing_tensor_names_the_file_and_lists_near_names()
    {
        using var f = SafetensorsFile.Open(Reference);
        var e = Assert.Throws<TensorNotFoundException>(() => f.GetTensor("z_f33"));
        Assert.Contains("reference.safetensors", e.Message);
        Assert.Contains("'z_f33'", e.Message);
        Assert.Contains("'z_f32'", e.Message);
        Assert.Equal("z_f32", e.NearNames[0]);
        Assert.Throws<TensorNotFoundException>(() => f.GetInfo("nope"));
    }
}
