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

    /// <summary>
    /// Issue 24: a killed run's orphaned worker, once killed, is a zombie until init reaps it (forever under an init that
    /// does not reap); its leftovers (scratch folder, temporary files) are a dead run's and the next run removes them.
    /// Planted here: `sh -c 'sleep 0 & exec sleep 30'` leaves a zombie child under a sleep that never reaps it.
    /// </summary>
    [SkippableFact]
    public void A_zombie_is_a_dead_process_and_its_leftovers_are_removed()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "zombies and /proc: Linux");
        using var parent = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("sh", ["-c", "sleep 0 & exec sleep 30"]) { UseShellExecute = false })!;
        try
        {
            int zombie = 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (zombie == 0 && clock.Elapsed < TimeSpan.FromSeconds(20))
            {
                try
                {
                    zombie = File.ReadAllText($"/proc/{parent.Id}/task/{parent.Id}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries)
                        .Select(c => int.Parse(c, System.Globalization.CultureInfo.InvariantCulture))
                        .FirstOrDefault(c => File.ReadAllText($"/proc/{c}/stat") is var st && st[(st.LastIndexOf(')') + 2)..].StartsWith('Z'));
                }
                catch (IOException) { }
                if (zombie == 0) Thread.Sleep(20);
            }
            Assert.True(zombie != 0, "no zombie child appeared");
            Assert.True(ProcessLiveness.IsAlive(parent.Id), "the sleeping parent is alive");
            Assert.False(ProcessLiveness.IsAlive(zombie), $"zombie {zombie} counted as alive");
            var stale = Path.Combine(_dir, $".config.json.tmp-{zombie}-abcdef12");
            File.WriteAllText(stale, "{\"half\": ");
            AtomicFile.WriteAllBytes(Path.Combine(_dir, "config.json"), "{}"u8);
            Assert.False(File.Exists(stale));
        }
        finally
        {
            parent.Kill();
            parent.WaitForExit();
        }
    }
}
