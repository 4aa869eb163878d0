using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Fixtures, recorded models and reports go through <see cref="AtomicFile"/>: a writer that dies half-way leaves the
/// previous file whole (the process-kill version of this is tests/E2E/KillWhileWritingTests).
/// </summary>
public sealed class AtomicFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-atomic-" + Guid.NewGuid().ToString("N"));

    public AtomicFileTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_writer_that_fails_half_way_leaves_the_previous_file_and_no_temporary()
    {
        var path = Path.Combine(_dir, "ref.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["x"] = Tensor.FromArray([1f, 2f], 2) });
        var before = File.ReadAllBytes(path);
        Assert.Throws<IOException>(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[10000]);
            throw new IOException("disk full (simulated)");
        }));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["ref.safetensors"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [Fact]
    public void A_dead_writers_temporary_file_is_removed_by_the_next_write()
    {
        var path = Path.Combine(_dir, "config.json");
        var stale = Path.Combine(_dir, ".config.json.tmp-999999999-abcdef12");   // no such process
        File.WriteAllText(stale, "{\"half\": ");
        AtomicFile.WriteAllBytes(path, "{}"u8);
        Assert.False(File.Exists(stale));
        Assert.Equal("{}", File.ReadAllText(path));
    }
}
