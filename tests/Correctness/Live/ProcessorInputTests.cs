using Harness.Commands;
using Harness.Engine.Config;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// Issue 22 item 5, "real inputs": a user has a text and an image file; `compare --image FILE --text ...` must hand the
/// engine exactly the ids and pixel values the checkpoint's OWN processor makes of them (its tokenizer and its image
/// processor's sizes, mean, std and rescale factor), not a library default's. The expected values here are computed
/// independently of the worker: the image is a BMP this test writes, of a size the processor keeps (3 x 4 merge blocks,
/// within min/max pixels), so pixel_values are Qwen2VLImageProcessor's documented arithmetic on known bytes:
/// (x * rescale_factor - mean) / std, laid out [grid_h/m, grid_w/m, m, m] patches of [C, temporal, p, p].
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public sealed class ProcessorInputTests : IDisposable
{
    private const int H = 3 * TinyQwen2Vl.Patch * TinyQwen2Vl.Merge, W = 4 * TinyQwen2Vl.Patch * TinyQwen2Vl.Merge;   // 36 x 48
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-processor-" + Guid.NewGuid().ToString("N"));

    public ProcessorInputTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>Seeded RGB pixels [H, W, 3] and the 24-bit BMP file of them (rows bottom-up, BGR, padded to 4 bytes).</summary>
    private (byte[,,] Pixels, string Path) WriteBmp()
    {
        var rng = new Random(22);
        var px = new byte[H, W, 3];
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < 3; c++) px[y, x, c] = (byte)rng.Next(256);
        int row = (W * 3 + 3) / 4 * 4;
        using var ms = new MemoryStream();
        using (var bw = new BinaryWriter(ms, System.Text.Encoding.ASCII, leaveOpen: true))
        {
            bw.Write((byte)'B'); bw.Write((byte)'M'); bw.Write(54 + row * H); bw.Write(0); bw.Write(54);
            bw.Write(40); bw.Write(W); bw.Write(H); bw.Write((short)1); bw.Write((short)24); bw.Write(0); bw.Write(row * H);
            bw.Write(2835); bw.Write(2835); bw.Write(0); bw.Write(0);
            for (int y = H - 1; y >= 0; y--)
            {
                for (int x = 0; x < W; x++)
                    for (int c = 2; c >= 0; c--) bw.Write(px[y, x, c]);
                for (int pad = W * 3; pad < row; pad++) bw.Write((byte)0);
            }
        }
        var path = Path.Combine(_dir, "picture.bmp");
        File.WriteAllBytes(path, ms.ToArray());
        return (px, path);
    }

    /// <summary>Qwen2VLImageProcessor's pixel_values of an image it does not resize: [grid_h * grid_w, C * temporal * p * p].</summary>
    private static float[] ExpectedPixelValues(byte[,,] px, double rescale, double[] mean, double[] std)
    {
        const int p = TinyQwen2Vl.Patch, m = TinyQwen2Vl.Merge, tp = TinyQwen2Vl.TemporalPatch;
        var values = new List<float>();
        for (int bh = 0; bh < H / (p * m); bh++)
            for (int bw = 0; bw < W / (p * m); bw++)
                for (int mh = 0; mh < m; mh++)
                    for (int mw = 0; mw < m; mw++)
                        for (int c = 0; c < 3; c++)
                            for (int t = 0; t < tp; t++)
                                for (int py = 0; py < p; py++)
                                    for (int pxx = 0; pxx < p; pxx++)
                                    {
                                        int y = (bh * m + mh) * p + py, x = (bw * m + mw) * p + pxx;
                                        values.Add((float)((px[y, x, c] * rescale - mean[c]) / std[c]));
                                    }
        return values.ToArray();
    }

    private static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        return a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
    }

    [SkippableFact]
    public void The_engine_receives_the_ids_and_pixel_values_of_the_checkpoints_own_processor()
    {
        var client = LiveReference.Client();
        using var context = ScenarioContext.Live(client);
        var dir = TinyQwen2VlProcessor.Directory(context);
        var (pixels, path) = WriteBmp();

        var processed = MediaFiles.Process(dir, "describe this picture", chat: false, MediaFiles.Read(path, null))!;
        var config = Qwen2VlConfig.Load(Path.Combine(dir, "config.json"));
        var scenario = Qwen2VlScenario.ForCheckpoint(dir, 1, DType.Float32, withImage: false, null)
            .WithProcessed(processed, "image picture.bmp", "processor-test");
        var engineInput = scenario.EngineInput(config, context.Reference(scenario));

        // ids: the tokenizer's, the image placeholder expanded to grid_h * grid_w / m^2 = 9 x 12 / 9 = 12 merged tokens
        long[] expectedIds = [TinyQwen2Vl.VisionStart, .. Enumerable.Repeat((long)TinyQwen2Vl.ImageToken, 12), TinyQwen2Vl.VisionEnd, 7, 8, 9];
        Assert.Equal(expectedIds, engineInput.Ids);
        Assert.Equal([new GridThw(1, H / TinyQwen2Vl.Patch, W / TinyQwen2Vl.Patch)], engineInput.ImageGrids);

        // pixel values: the checkpoint's processor settings on the known bytes
        var s = TinyQwen2VlProcessor.ProcessorSettings();
        double[] Triple(string key) => s[key]!.AsArray().Select(v => (double)v!).ToArray();
        var expected = ExpectedPixelValues(pixels, (double)s["rescale_factor"]!, Triple("image_mean"), Triple("image_std"));
        var received = engineInput.PixelValues!.ToFloatArray();
        Assert.Equal([expected.Length / (3 * TinyQwen2Vl.TemporalPatch * TinyQwen2Vl.Patch * TinyQwen2Vl.Patch), 3 * TinyQwen2Vl.TemporalPatch * TinyQwen2Vl.Patch * TinyQwen2Vl.Patch],
            engineInput.PixelValues.ShapeArray);
        Assert.True(MaxAbsDiff(expected, received) < 1e-5, $"max |diff| {MaxAbsDiff(expected, received)}");

        // The planted bug: the library's processor (CLIP mean/std, 1/255), which the synthetic-image path builds, gives
        // other pixel values: the check above tells the checkpoint's processor from it
        var library = ExpectedPixelValues(pixels, 1.0 / 255, [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]);
        Assert.True(MaxAbsDiff(library, received) > 0.1, $"the library default's pixel values are within {MaxAbsDiff(library, received)} of the checkpoint's");
    }
}
