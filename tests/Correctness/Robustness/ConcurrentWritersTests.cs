using System.Text;
using Harness.Engine.IO;
using Harness.Tests.Shared;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 24, "two writers, one report": AtomicFile staged every file of a report under one fixed name (".NAME.staged"),
/// so two runs writing the same report folder failed with "Could not find file '.../.report.json.staged'" and left
/// report.json and junit.xml from one run beside index.html from the other. Now each write stages under its own name and
/// a report's files are written under the folder's writer lock: whatever the number of writers, each finishes, and the
/// three files come from one of them. Slow writes (an explicit input) make the writers overlap.
/// </summary>
public sealed class ConcurrentWritersTests : IDisposable
{
    private static readonly string[] Files = ["report.json", "junit.xml", "index.html"];
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-writers-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static byte[] Content(int writer, string file) =>
        Encoding.UTF8.GetBytes($"writer {writer} {file}\n" + new string('x', 12_000));

    private static int WriterOf(byte[] bytes) => int.Parse(Encoding.UTF8.GetString(bytes).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);

    [Theory]
    [InlineData(2)]
    [InlineData(8)]
    public void Concurrent_writers_of_one_report_folder_all_finish_and_leave_the_files_of_one_writer(int writers)
    {
        for (int round = 0; round < 3; round++)
        {
            using var start = new Barrier(writers);
            var errors = new List<Exception>();
            var threads = Enumerable.Range(0, writers).Select(w => new Thread(() =>
            {
                start.SignalAndWait();
                try
                {
                    AtomicFile.WriteAll(Files.Select(f => (Path.Combine(_dir, f), Content(w, f))).ToList(), through: SlowStream.Through(1));
                }
                catch (Exception e)
                {
                    lock (errors) errors.Add(e);
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Assert.True(errors.Count == 0, $"round {round}: {errors.Count} of {writers} writers failed: {string.Join("; ", errors.Select(e => e.Message))}");
            var from = Files.Select(f => WriterOf(File.ReadAllBytes(Path.Combine(_dir, f)))).Distinct().ToList();
            Assert.True(from.Count == 1, $"round {round}: the report's files come from writers {string.Join(", ", from)}");
            Assert.Empty(Directory.EnumerateFiles(_dir, ".*tmp-*"));
            Assert.Empty(Directory.EnumerateFiles(_dir, "*.staged"));
        }
    }

    [Fact]
    public void Single_file_writers_stage_under_names_of_their_own()
    {
        var path = Path.Combine(_dir, "model.safetensors");
        Directory.CreateDirectory(_dir);
        var errors = new List<Exception>();
        var threads = Enumerable.Range(0, 4).Select(w => new Thread(() =>
        {
            try { AtomicFile.WriteAllBytes(path, Content(w, "model"), through: SlowStream.Through(1)); }
            catch (Exception e) { lock (errors) errors.Add(e); }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Empty(errors);
        Assert.InRange(WriterOf(File.ReadAllBytes(path)), 0, 3);
        Assert.Equal(["model.safetensors"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }
}
