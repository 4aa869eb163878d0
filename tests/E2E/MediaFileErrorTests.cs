namespace Harness.Tests.E2E;

/// <summary>
/// Issue 22 item 5: `compare --image FILE / --video FILE` reads files a user hands it, which are untrusted input. Each bad
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
    [InlineData("tiny-gemma4-e2b-like-fp32", "gemma4_text")]
    [InlineData("tiny-gemma3n-fp32", "gemma3n")]
    [InlineData("tiny-llama-fp32", "llama")]
    public void A_family_whose_compare_takes_no_picture_says_so(string model, string modelType)
    {
        var path = Path.Combine(_dir, "pic.bmp");
        File.WriteAllBytes(path, [0x42, 0x4d, 0, 0]);
        AssertOneLine(Compare("--image", path, model), "--image needs a checkpoint whose compare takes pictures (qwen2_vl)", $"is {modelType}");
        AssertOneLine(Compare("--video", path, model), "--video needs a checkpoint whose compare takes pictures (qwen2_vl)", $"is {modelType}");
    }

    [Fact]
    public void A_file_with_prompt_ids_is_a_usage_error()
    {
        var path = Path.Combine(_dir, "pic.bmp");
        File.WriteAllBytes(path, [0x42, 0x4d, 0, 0]);
        var r = CliProcess.Run(["compare", "--model", Fixture("tiny-qwen2-vl-fp32"), "--image", path, "--prompt", "1,2"], NoReference, timeoutSeconds: 60);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("take their text from --text", r.Stderr);
    }
}
