using Harness.Reference;
using Harness.Scenarios;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 22 item 5 as a user runs it: a Qwen2-VL folder with its processor beside the weights (the tiny model and
/// <see cref="TinyQwen2VlProcessor"/>), an image or a video file and a text. `compare --image FILE --text ...` and
/// `--video FILE --chat` run both sides on the processor's ids and pixel values, the engine through its own vision tower;
/// a file the decoders cannot read is one line naming it, exit 2.
/// </summary>
[Trait("Tier", "Live")]
public sealed class CompareMediaTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-media-live-" + Guid.NewGuid().ToString("N"));
    private ScenarioContext? _context;

    public CompareMediaTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        _context?.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>The tiny Qwen2-VL with its processor, built by the live reference.</summary>
    private string Model()
    {
        LiveCliTests.RequireReference();
        var worker = ReferenceWorker.Shared;
        worker.Start();
        _context = ScenarioContext.Live(ReferenceClient.Shared);
        return TinyQwen2VlProcessor.Directory(_context);
    }

    /// <summary>A 40 x 30 24-bit BMP of seeded pixels (the processor resizes it into whole merge blocks).</summary>
    private string Bmp()
    {
        const int w = 40, h = 30, row = (w * 3 + 3) / 4 * 4;
        var rng = new Random(5);
        var data = new byte[54 + row * h];
        "BM"u8.CopyTo(data);
        BitConverter.GetBytes(data.Length).CopyTo(data, 2);
        BitConverter.GetBytes(54).CopyTo(data, 10);
        BitConverter.GetBytes(40).CopyTo(data, 14);
        BitConverter.GetBytes(w).CopyTo(data, 18);
        BitConverter.GetBytes(h).CopyTo(data, 22);
        BitConverter.GetBytes((short)1).CopyTo(data, 26);
        BitConverter.GetBytes((short)24).CopyTo(data, 28);
        BitConverter.GetBytes(row * h).CopyTo(data, 34);
        for (int y = 0; y < h; y++) rng.NextBytes(data.AsSpan(54 + y * row, w * 3));
        var path = Path.Combine(_dir, "photo.bmp");
        File.WriteAllBytes(path, data);
        return path;
    }

    /// <summary>A 4-frame 36 x 24 YUV4MPEG2 video (4:4:4), which ffmpeg reads: raw planes behind a text header.</summary>
    private string Y4m() => Y4m(_dir);

    /// <summary>The same clip in <paramref name="dir"/> (the Gemma4 video compare's too).</summary>
    internal static string Y4m(string dir)
    {
        const int w = 36, h = 24, frames = 4;
        var rng = new Random(6);
        using var ms = new MemoryStream();
        ms.Write(System.Text.Encoding.ASCII.GetBytes($"YUV4MPEG2 W{w} H{h} F2:1 Ip A1:1 C444\n"));
        for (int f = 0; f < frames; f++)
        {
            ms.Write("FRAME\n"u8);
            var planes = new byte[3 * w * h];
            for (int i = 0; i < planes.Length; i++) planes[i] = (byte)(16 + rng.Next(220));
            ms.Write(planes);
        }
        var path = Path.Combine(dir, "clip.y4m");
        File.WriteAllBytes(path, ms.ToArray());
        return path;
    }

    [SkippableFact]
    public void An_image_file_and_a_text_through_the_checkpoints_processor_compare_clean_at_tp2()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--tp", "2", "--image", Bmp(), "--text", "describe this picture"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        // 40 x 30 -> 36 x 24 (whole 12-pixel merge blocks): 2 x 3 merged tokens, then the text's ids 7 8 9
        Assert.Contains("tokens from Qwen2VLProcessor in", r.Stdout);
        Assert.Contains($"with image photo.bmp: {TinyQwen2Vl.VisionStart},{string.Join(",", Enumerable.Repeat(TinyQwen2Vl.ImageToken, 6))},{TinyQwen2Vl.VisionEnd},7,8,9", r.Stdout);
        Assert.Contains("model.visual.merger", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
        Assert.Contains("token comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void A_video_file_through_the_chat_template_compares_clean()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--video", Y4m(), "--text", "describe this clip", "--chat"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        // bos, then 4 frames of 2 x 3 merged tokens inside vision start/end, then the text
        Assert.Contains($"with video clip.y4m: 1,{TinyQwen2Vl.VisionStart},{string.Join(",", Enumerable.Repeat(TinyQwen2Vl.VideoToken, 24))},{TinyQwen2Vl.VisionEnd},7,8,10", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void A_file_the_decoder_cannot_read_is_one_line_naming_it()
    {
        var model = Model();
        var bad = Path.Combine(_dir, "not-really.png");
        File.WriteAllText(bad, "these bytes are no picture");
        var r = CliProcess.Run(["compare", "--model", model, "--image", bad, "--text", "hello"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("harness", StringComparison.Ordinal));
        Assert.Contains($"{bad}: not an image PIL can read", r.Stderr);

        r = CliProcess.Run(["compare", "--model", model, "--video", bad, "--text", "hello"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains($"{bad}: not a video PyAV can read", r.Stderr);
        Assert.DoesNotContain("Traceback", r.Stderr);
    }
}
