using System.Text.Json.Nodes;
using Harness.Commands;
using Harness.Engine.Tensors;
using Harness.Reference;
using Harness.Scenarios;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 22 item 5 for Gemma4: `compare --image FILE` and `--audio FILE.wav` must hand the engine (and its towers) exactly the
/// ids, pixel values and features the checkpoint's OWN processor makes (Gemma4Processor with the folder's image processor
/// and audio feature extractor), not a library default's. Independent expectations: the image is a BMP this test writes at
/// the size the processor keeps (56 x 80 = 70 soft tokens x pooling 2^2 x patch 4^2 pixels: no resize), so pixel_values are
/// Gemma4ImageProcessor's documented arithmetic on known bytes ((x * rescale - mean) / std, patches row-major, each patch
/// [p, p, C]) with (x, y) patch positions; the ids expand the placeholders by the counts the processor's own rules give
/// (pixels / (pooling * patch)^2 image tokens; the audio mask subsampled twice by the SSCP's stride-2 arithmetic); the
/// features equal the checkpoint's feature extractor called directly on the samples this test wrote.
/// </summary>
[Trait("Tier", "Live")]
public sealed class Gemma4ProcessorInputTests : IDisposable
{
    private const int H = 56, W = 80, P = 4, Samples = 4000;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-gemma4-processor-" + Guid.NewGuid().ToString("N"));

    public Gemma4ProcessorInputTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>The BMP's pixels as PIL reads them: [H, W, 3] RGB, rows top-down (the file stores them bottom-up, BGR).</summary>
    private static byte[,,] BmpPixels(string path)
    {
        var data = File.ReadAllBytes(path);
        int row = (W * 3 + 3) / 4 * 4;
        var px = new byte[H, W, 3];
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < 3; c++) px[H - 1 - y, x, c] = data[54 + y * row + x * 3 + (2 - c)];
        return px;
    }

    /// <summary>Gemma4ImageProcessor's pixel_values of an image it does not resize: [patches, p * p * C], patches row-major.</summary>
    private static float[] ExpectedPixelValues(byte[,,] px, double rescale, double[] mean, double[] std)
    {
        var values = new List<float>();
        for (int ph = 0; ph < H / P; ph++)
            for (int pw = 0; pw < W / P; pw++)
                for (int y = 0; y < P; y++)
                    for (int x = 0; x < P; x++)
                        for (int c = 0; c < 3; c++)
                            values.Add((float)((px[ph * P + y, pw * P + x, c] * rescale - mean[c]) / std[c]));
        return values.ToArray();
    }

    /// <summary>
    /// The audio token count Gemma4Processor.replace_audio_token gives: mel frames of the padded clip (128-sample multiple),
    /// a frame valid when its window's last sample is real audio, then the mask subsampled by two stride-2 convolutions.
    /// </summary>
    private static (bool[] Mask, int Tokens) ExpectedAudioMask(int samples, int frameLength, int hop)
    {
        int padded = (samples + 127) / 128 * 128, padLeft = frameLength / 2;
        int frames = (padded + padLeft - (frameLength + 1)) / hop + 1;
        var mask = Enumerable.Range(0, frames).Select(i => i * hop + frameLength - padLeft < samples).ToArray();
        var m = mask;
        for (int k = 0; k < 2; k++)
        {
            int tOut = (m.Length + 2 - 3) / 2 + 1;
            m = m.Where((_, i) => i % 2 == 0).Take(tOut).ToArray();
        }
        return (mask, m.Count(v => v));
    }

    private static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        return a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
    }

    [SkippableFact]
    public void The_engine_receives_the_ids_pixel_values_and_features_of_the_checkpoints_own_processor()
    {
        LiveCliTests.RequireReference();
        ReferenceWorker.Shared.Start();
        var client = ReferenceClient.Shared;
        using var context = ScenarioContext.Live(client);
        var dir = TinyGemma4Processor.Directory(context);
        var image = CompareGemma4MediaTests.Bmp(_dir, W, H, seed: 23, name: "picture.bmp");
        var wav = CompareGemma4MediaTests.Wav(_dir, Samples);

        var processed = MediaFiles.Process(dir, "describe this picture", chat: false, MediaFiles.Read(image, null, wav))!;
        var scenario = Gemma4MultimodalScenario.ForCheckpoint(dir, 1, DType.Float32, processed, "image picture.bmp, audio speech.wav", "processor-test");
        var towers = scenario.TowerInputs();                                        // what the engine's towers and the reference get

        // ids: the placeholders expanded, image then audio, then the words (ids 12, 13, 14)
        int imageTokens = H * W / (2 * P * 2 * P);                                  // 70: pooling 2, patch 4
        var c = TinyGemma4Towers.Config();
        long Id(string key) => (int)c[key]!;
        var (mask, audioTokens) = ExpectedAudioMask(Samples, TinyGemma4Processor.SamplingRate / 50, TinyGemma4Processor.SamplingRate / 100);
        long[] expectedIds =
        [
            Id("boi_token_id"), .. Enumerable.Repeat(Id("image_token_id"), imageTokens), Id("eoi_token_id"),
            Id("boa_token_id"), .. Enumerable.Repeat(Id("audio_token_id"), audioTokens), Id("eoa_token_index"), 12, 13, 14,
        ];
        Assert.Equal(13, audioTokens);
        Assert.Equal(expectedIds, scenario.PromptIds());

        // pixel values and positions: the checkpoint's processor settings on the known bytes, no padding (280 patches = max)
        var s = TinyGemma4Processor.ImageSettings();
        double[] Triple(string key) => s[key]!.AsArray().Select(v => (double)v!).ToArray();
        var px = BmpPixels(image);
        var expected = ExpectedPixelValues(px, (double)s["rescale_factor"]!, Triple("image_mean"), Triple("image_std"));
        Assert.Equal([1, H * W / (P * P), P * P * 3], towers["pixel_values"].ShapeArray);
        var received = towers["pixel_values"].ToFloatArray();
        Assert.True(MaxAbsDiff(expected, received) < 1e-5, $"max |diff| {MaxAbsDiff(expected, received)}");
        var positions = towers["image_position_ids"].ToInt64Array();
        for (int i = 0; i < H * W / (P * P); i++)
            Assert.True(positions[2 * i] == i % (W / P) && positions[2 * i + 1] == i / (W / P), $"patch {i}: position ({positions[2 * i]}, {positions[2 * i + 1]})");
        // The planted bug: the library's image processor (rescale 1/255, no normalisation) gives other pixel values
        var library = ExpectedPixelValues(px, 1.0 / 255, [0, 0, 0], [1, 1, 1]);
        Assert.True(MaxAbsDiff(library, received) > 0.1, $"the library default's pixel values are within {MaxAbsDiff(library, received)} of the checkpoint's");

        // features: the checkpoint's feature extractor called directly on the samples written, and the frame mask
        var samples = CompareGemma4MediaTests.WavSamples(Samples, TinyGemma4Processor.SamplingRate).Select(v => v / 32768f).ToArray();
        Tensor Features(bool libraryDefaults) => client.Invoke("audio_features",
            new JsonObject { ["model_dir"] = client.WorkerPath(dir), ["library_defaults"] = libraryDefaults },
            [("samples", Tensor.FromArray(samples, samples.Length))]).Need("input_features");
        var features = towers["input_features"];
        Assert.Equal([1, mask.Length, TinyGemma4Towers.MelBins], features.ShapeArray);
        Assert.Equal(mask.Select(v => v ? 1L : 0L).ToArray(), towers["input_features_mask"].ToInt64Array());
        Assert.True(MaxAbsDiff(Features(false).ToFloatArray(), features.ToFloatArray()) == 0, "the features differ from the checkpoint's feature extractor's");
        // The planted bug: the library's feature extractor (no preemphasis, scale, per-bin statistics, mel floor 1e-3, 0-8000 Hz)
        double off = MaxAbsDiff(Features(true).ToFloatArray(), features.ToFloatArray());
        Assert.True(off > 0.1, $"the library default's features are within {off} of the checkpoint's");
    }
}
