namespace Harness.Tests.E2E;

/// <summary>
/// Issue 22 item 5: `compare --image FILE / --video FILE / --audio FILE.wav` reads files a user hands it, which are untrusted input. Each bad
/// one ends in one line naming the file and what is wrong with it, exit 2, before any reference work (the environment
/// has no interpreter, so a check that came later could not print this line), and a FIFO is never opened (it would hang).
/// </summary>
public sealed class MediaFileErrorTests : IDisposable
{
    private static readonly Dictionary<string, string?> NoReference = new() { ["HARNESS_PYTHON"] = "/nonexistent/python", ["HARNESS_CACHE"] = "/nonexistent" };
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-media-" + Guid.NewGuid().ToString("N"));

    public MediaFileErrorTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static string Fixture(string name) => Path.Combine(CliProcess.RepositoryRoot, "fixtures", "models", name);

    private static void AssertOneLine(CliProcess.Result r, params string[] expected)
    {
        Assert.True(r.ExitCode == 2, r.ToString());
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, r.ToString());
        foreach (var e in expected) Assert.Contains(e, r.Stderr);
        Assert.DoesNotContain("   at ", r.All);
        Assert.DoesNotContain("live reference is not available", r.All);   // refused before an interpreter was looked for
    }

    private CliProcess.Result Compare(string option, string file, string model = "tiny-qwen2-vl-fp32") =>
        CliProcess.Run(["compare", "--model", Fixture(model), option, file, "--text", "hello"], NoReference, timeoutSeconds: 60);

    [Theory]
    [InlineData("--image")]
    [InlineData("--video")]
    public void A_missing_file_is_named(string option)
    {
        var path = Path.Combine(_dir, "nothing-here.png");
        AssertOneLine(Compare(option, path), path, $"no such {option} file");
    }

    [Theory]
    [InlineData("--image")]
    [InlineData("--video")]
    public void A_folder_is_not_a_file(string option) => AssertOneLine(Compare(option, _dir), _dir, "is a folder, not a regular file");

    [Fact]
    public void A_fifo_is_named_and_never_opened()
    {
        var fifo = Path.Combine(_dir, "pipe.png");
        using (var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("mkfifo", [fifo]) { UseShellExecute = false })!) p.WaitForExit();
        // nothing ever writes to it: opening it for reading would block forever (the harness would hit the 60 s timeout)
        AssertOneLine(Compare("--image", fifo), fifo, "is a FIFO (named pipe), not a regular file");
    }

    [Fact]
    public void A_dangling_link_is_named()
    {
        var link = Path.Combine(_dir, "gone.png");
        File.CreateSymbolicLink(link, Path.Combine(_dir, "missing-target.png"));
        AssertOneLine(Compare("--image", link), link, "symbolic link to a missing file");
    }

    [Fact]
    public void An_empty_file_is_named()
    {
        var path = Path.Combine(_dir, "empty.png");
        File.WriteAllBytes(path, []);
        AssertOneLine(Compare("--image", path), path, "is empty: no image in it");
    }

    [Fact]
    public void A_file_over_the_cap_is_named_with_its_size_and_the_cap()
    {
        var path = Path.Combine(_dir, "huge.png");
        using (var fs = new FileStream(path, FileMode.CreateNew)) fs.SetLength((64L << 20) + 1);   // sparse: no 64 MiB written
        AssertOneLine(Compare("--image", path), path, "is 67,108,865 bytes; a --image file may be at most 67,108,864");
    }

    [Theory]
    [InlineData("tiny-gemma4-e2b-like-fp32", "gemma4_text", "is a text-only checkpoint (no towers)")]
    [InlineData("tiny-llama-fp32", "llama", "takes text only")]
    public void A_family_whose_compare_takes_no_picture_says_so(string model, string modelType, string why)
    {
        var path = Path.Combine(_dir, "pic.bmp");
        File.WriteAllBytes(path, [0x42, 0x4d, 0, 0]);
        AssertOneLine(Compare("--image", path, model), "--image needs a checkpoint whose compare takes pictures (qwen2_vl, gemma4, gemma3n)", $"is {modelType}, which {why}");
        AssertOneLine(Compare("--video", path, model), "--video needs a checkpoint whose compare takes videos (qwen2_vl, gemma4)", $"is {modelType}, which {why}");
    }

    /// <summary>
    /// Gemma3n takes --image FILE through timm's MobileNetV5 (the engine's own port), so a checkpoint without the tower's
    /// weights (the catalog's soft-token model, whose reference stubs the tower) names the tensor it lacks; no --video.
    /// </summary>
    [Fact]
    public void Gemma3n_without_its_vision_tower_names_the_missing_tensor_and_takes_no_video()
    {
        var path = Path.Combine(_dir, "pic.bmp");
        File.WriteAllBytes(path, [0x42, 0x4d, 0, 0]);
        AssertOneLine(Compare("--image", path, "tiny-gemma3n-fp32"), "has no tensor 'model.vision_tower.timm_model.conv_stem.conv.weight'",
            "--image needs the checkpoint's vision tower (timm's MobileNetV5)");
        AssertOneLine(Compare("--video", path, "tiny-gemma3n-fp32"), "--video needs a checkpoint whose compare takes videos (qwen2_vl, gemma4)",
            "is gemma3n, which has no video path: Gemma3nProcessor takes images and audio");
    }

    [Theory]
    [InlineData("tiny-gemma4-e2b-like-fp32", "gemma4_text", "a checkpoint whose compare takes audio (gemma4, gemma3n)", "is a text-only checkpoint (no towers)")]
    [InlineData("tiny-qwen2-vl-fp32", "qwen2_vl", "a checkpoint whose compare takes audio (gemma4, gemma3n)", "has no audio tower")]
    [InlineData("tiny-llama-fp32", "llama", "a checkpoint whose compare takes audio (gemma4, gemma3n)", "takes text only")]
    public void A_family_whose_compare_takes_no_audio_says_so(string model, string modelType, string needs, string why)
    {
        var path = Path.Combine(_dir, "speech.wav");
        File.WriteAllBytes(path, "RIFF"u8.ToArray());
        AssertOneLine(Compare("--audio", path, model), $"--audio needs {needs}", $"is {modelType}, which {why}");
    }

    [Fact]
    public void Gemma4_takes_no_video_beside_an_image_and_no_synthetic_image()
    {
        var path = Path.Combine(_dir, "clip.y4m");
        File.WriteAllBytes(path, "YUV4MPEG2"u8.ToArray());
        var image = Path.Combine(_dir, "photo.png");
        File.WriteAllBytes(image, "PNG"u8.ToArray());
        var both = CliProcess.Run(["compare", "--model", Fixture("tiny-gemma4-e2b-like-mm-fp32"), "--video", path, "--image", image, "--text", "hello"], NoReference, timeoutSeconds: 60);
        AssertOneLine(both, "--video with --image needs a qwen2_vl checkpoint", "is gemma4, which compare judges its vision tower's modules on one input: an image or a video");
        var r = CliProcess.Run(["compare", "--model", Fixture("tiny-gemma4-e2b-like-mm-fp32"), "--image"], NoReference, timeoutSeconds: 60);
        AssertOneLine(r, "--image without a FILE needs a qwen2_vl checkpoint (its synthetic image)", "takes an image file: --image FILE");
    }

    [Fact]
    public void A_missing_or_oversized_wav_is_named()
    {
        var missing = Path.Combine(_dir, "nowhere.wav");
        AssertOneLine(Compare("--audio", missing, "tiny-gemma4-e2b-like-mm-fp32"), missing, "no such --audio file");
        var big = Path.Combine(_dir, "big.wav");
        using (var f = File.Create(big)) f.SetLength((256L << 20) + 1);              // sparse: no disk used
        AssertOneLine(Compare("--audio", big, "tiny-gemma4-e2b-like-mm-fp32"), big, "is 268,435,457 bytes; a --audio file may be at most 268,435,456");
    }

    [Fact]
    public void A_file_with_prompt_ids_is_a_usage_error()
    {
        var path = Path.Combine(_dir, "pic.bmp");
        File.WriteAllBytes(path, [0x42, 0x4d, 0, 0]);
        var r = CliProcess.Run(["compare", "--model", Fixture("tiny-qwen2-vl-fp32"), "--image", path, "--prompt", "1,2"], NoReference, timeoutSeconds: 60);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("take their text from --text", r.Stderr);
        r = CliProcess.Run(["compare", "--model", Fixture("tiny-gemma4-e2b-like-mm-fp32"), "--audio", path, "--prompt-length", "3"], NoReference, timeoutSeconds: 60);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("--image FILE, --video FILE and --audio FILE take their text from --text", r.Stderr);
    }
}
