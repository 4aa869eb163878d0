using Harness.Reference;
using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.E2E;

/// <summary>
/// Issue 22 item 5 for Gemma4 as a user runs it: a Gemma4ForConditionalGeneration folder with its processor beside the
/// weights (<see cref="TinyGemma4Processor"/>), an image file, a WAV file and a text. `compare --image FILE` and
/// `compare --audio FILE.wav` run both sides on the processor's ids, pixel values and features, the engine through its own
/// vision and audio towers, every tower module judged. Each check is shown to fail on its bug through the same path: the
/// audio attention's 4-D x 3-D product on vLLM's pre-fix batch-invariant matmul dies at
/// model.audio_tower.layers.0.self_attn naming both shapes; the vision embedder built input_is_parallel=True at TP=2 is
/// caught at model.embed_vision.
/// </summary>
[Trait("Tier", "Live")]
public sealed class CompareGemma4MediaTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-gemma4-media-" + Guid.NewGuid().ToString("N"));
    private ScenarioContext? _context;

    public CompareGemma4MediaTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        _context?.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>The tiny Gemma4 with both towers and its processor, built by the live reference.</summary>
    private string Model(Harness.Engine.Tensors.DType dtype = Harness.Engine.Tensors.DType.Float32)
    {
        LiveCliTests.RequireReference();
        ReferenceWorker.Shared.Start();
        _context = ScenarioContext.Live(ReferenceClient.Shared);
        return TinyGemma4Processor.Directory(_context, dtype);
    }

    /// <summary>A 24-bit BMP of seeded pixels, w x h.</summary>
    internal static string Bmp(string dir, int w = 40, int h = 30, int seed = 5, string name = "photo.bmp")
    {
        int row = (w * 3 + 3) / 4 * 4;
        var rng = new Random(seed);
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
        var path = Path.Combine(dir, name);
        File.WriteAllBytes(path, data);
        return path;
    }

    /// <summary>A mono 16-bit PCM WAV of <paramref name="samples"/> samples: a 440 Hz tone and seeded noise.</summary>
    internal static string Wav(string dir, int samples = 4000, int rate = TinyGemma4Processor.SamplingRate, string name = "speech.wav")
    {
        var pcm = WavSamples(samples, rate);
        using var ms = new MemoryStream();
        using (var bw = new BinaryWriter(ms, System.Text.Encoding.ASCII, leaveOpen: true))
        {
            bw.Write("RIFF"u8); bw.Write(36 + 2 * samples); bw.Write("WAVE"u8);
            bw.Write("fmt "u8); bw.Write(16); bw.Write((short)1); bw.Write((short)1); bw.Write(rate); bw.Write(rate * 2); bw.Write((short)2); bw.Write((short)16);
            bw.Write("data"u8); bw.Write(2 * samples);
            foreach (var s in pcm) bw.Write(s);
        }
        var path = Path.Combine(dir, name);
        File.WriteAllBytes(path, ms.ToArray());
        return path;
    }

    /// <summary>The WAV's 16-bit samples.</summary>
    internal static short[] WavSamples(int samples, int rate)
    {
        var rng = new Random(7);
        return Enumerable.Range(0, samples)
            .Select(i => (short)Math.Round(8000 * Math.Sin(2 * Math.PI * 440 * i / rate) + rng.Next(-2000, 2000))).ToArray();
    }

    [SkippableFact]
    public void An_image_file_and_a_text_compare_clean_through_the_engines_own_vision_tower_at_tp2()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--tp", "2", "--image", Bmp(_dir), "--text", "describe this picture"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("tokens from Gemma4Processor in", r.Stdout);
        Assert.Contains("model.vision_tower.encoder.layers.1.self_attn", r.Stdout);   // the engine's tower, judged module by module
        Assert.Contains("model.embed_vision", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
        Assert.Contains("token comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void A_video_file_compares_clean_with_its_frames_through_the_engines_own_vision_tower()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--video", CompareMediaTests.Y4m(_dir), "--text", "describe this", "--chat"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        // bos, then each sampled frame (VideoFrames of the clip's 4) as its timestamp and boi, video x soft tokens, eoi
        var prompt = r.Stdout.Split('\n').Single(l => l.StartsWith("prompt:", StringComparison.Ordinal));
        Assert.Contains("tokens from the chat template of Gemma4Processor in", prompt);
        var ids = prompt[(prompt.IndexOf("clip.y4m: ", StringComparison.Ordinal) + "clip.y4m: ".Length)..].Split(',').Select(long.Parse).ToArray();
        var videoId = (int)TinyGemma4Towers.Config()["video_token_id"]!;
        int videoTokens = ids.Count(id => id == videoId);
        Assert.Equal(TinyGemma4Processor.VideoFrames, ids.Count(id => id == (int)TinyGemma4Towers.Config()["boi_token_id"]!));
        Assert.True(videoTokens > 0 && videoTokens % TinyGemma4Processor.VideoFrames == 0 && videoTokens <= TinyGemma4Processor.VideoFrames * TinyGemma4Processor.VideoSoftTokens,
            $"{videoTokens} video tokens for {TinyGemma4Processor.VideoFrames} frames of at most {TinyGemma4Processor.VideoSoftTokens}: {prompt}");
        Assert.DoesNotContain((int)TinyGemma4Towers.Config()["image_token_id"]!, ids);
        Assert.Contains("model.vision_tower.encoder.layers.1.self_attn", r.Stdout);   // the engine's tower on the frames, module by module
        Assert.Contains("model.embed_vision", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
        Assert.Contains("token comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void A_video_through_the_vision_embedder_built_input_is_parallel_is_caught_at_the_embedder_at_tp2()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--tp", "2", "--video", CompareMediaTests.Y4m(_dir), "--text", "hello", "--fault", "row-parallel-input-is-parallel"],
            null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("fault 'row-parallel-input-is-parallel' caught at model.embed_vision", r.Stdout);
    }

    [SkippableFact]
    public void A_wav_file_through_the_chat_template_compares_clean_through_the_engines_own_audio_tower()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--audio", Wav(_dir), "--text", "describe this sound", "--chat"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("with audio speech.wav: 2,125,", r.Stdout);   // bos, boa, the audio tokens, eoa, the text
        Assert.Contains("model.audio_tower.layers.1.self_attn", r.Stdout);
        Assert.Contains("model.embed_audio", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void An_image_and_a_wav_together_compare_clean_in_bf16_at_tp2()
    {
        var model = Model(Harness.Engine.Tensors.DType.BFloat16);
        var r = CliProcess.Run(["compare", "--model", model, "--dtype", "bf16", "--tp", "2", "--image", Bmp(_dir), "--audio", Wav(_dir), "--text", "describe this"],
            null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("with image photo.bmp, audio speech.wav: 123,", r.Stdout);
        Assert.Contains("model.vision_tower.pooler", r.Stdout);
        Assert.Contains("model.audio_tower.output_proj", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void The_audio_attentions_4d_x_3d_matmul_on_the_pre_fix_batch_invariant_matmul_is_caught_at_the_audio_attention()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--audio", Wav(_dir), "--text", "hello", "--fault", "matmul-no-nd-broadcast"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("fault 'matmul-no-nd-broadcast' caught at model.audio_tower.layers.0.self_attn", r.Stdout);
        Assert.Contains("matmul_batch_invariant currently only supports", r.Stdout);
    }

    [SkippableFact]
    public void The_vision_embedder_built_input_is_parallel_is_caught_at_the_embedder_at_tp2()
    {
        var model = Model();
        var r = CliProcess.Run(["compare", "--model", model, "--tp", "2", "--image", Bmp(_dir), "--text", "hello", "--fault", "row-parallel-input-is-parallel"],
            null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("fault 'row-parallel-input-is-parallel' caught at model.embed_vision", r.Stdout);
    }

    [SkippableFact]
    public void A_wav_at_another_rate_or_not_a_wav_is_one_line_naming_the_file()
    {
        var model = Model();
        var wrongRate = Wav(_dir, rate: 16000, name: "fast.wav");
        var r = CliProcess.Run(["compare", "--model", model, "--audio", wrongRate, "--text", "hello"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("harness", StringComparison.Ordinal));
        Assert.Contains($"{wrongRate}: sampled at 16000 Hz; the checkpoint's feature extractor (Gemma4AudioFeatureExtractor) takes 8000 Hz", r.Stderr);

        var bad = Path.Combine(_dir, "not-really.wav");
        File.WriteAllText(bad, "these bytes are no sound");
        r = CliProcess.Run(["compare", "--model", model, "--audio", bad, "--text", "hello"], null, timeoutSeconds: 600);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains($"{bad}: not a WAV file the wave module can read", r.Stderr);
        Assert.DoesNotContain("Traceback", r.Stderr);
    }
}

/// <summary>
/// Issue 22 item 5 for Gemma3n: `compare --audio FILE.wav` on a Gemma3nForConditionalGeneration folder with its processor
/// (<see cref="TinyGemma3nProcessor"/>): the checkpoint's Gemma3nProcessor makes the ids (the placeholder expanded to
/// audio_seq_length tokens) and features; both sides run their own audio tower on the features (the engine's
/// Gemma3nAudioEncoder), every tower module is judged, then the embedders and the decoder. Each check fails on its bug
/// through the same path: the subsampling norm with a plain mean is caught at the first conv block (bf16), the attention
/// without its relative shift at the first conformer block's attention (fp32), the embedder built input_is_parallel=True at TP=2 at
/// model.embed_vision.embedding_projection (its hard-token pass runs first, as in the catalog's scenario).
/// </summary>
[Trait("Tier", "Live")]
public sealed class CompareGemma3nAudioTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-gemma3n-audio-" + Guid.NewGuid().ToString("N"));
    private ScenarioContext? _context;

    public void Dispose()
    {
        _context?.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private string Model(Harness.Engine.Tensors.DType dtype = Harness.Engine.Tensors.DType.Float32)
    {
        LiveCliTests.RequireReference();
        Directory.CreateDirectory(_dir);
        ReferenceWorker.Shared.Start();
        _context = ScenarioContext.Live(ReferenceClient.Shared);
        return TinyGemma3nProcessor.Directory(_context, dtype);
    }

    private string Wav() => CompareGemma4MediaTests.Wav(_dir, 3000, TinyGemma3nProcessor.SamplingRate);

    private CliProcess.Result Compare(params string[] args)
    {
        var r = CliProcess.Run(["compare", .. args], null, timeoutSeconds: 600);
        output.WriteLine(r.ToString());
        return r;
    }

    [SkippableFact]
    public void A_wav_file_compares_clean_through_the_engines_own_audio_tower_and_its_embedders_at_tp2()
    {
        var r = Compare("--model", Model(), "--tp", "2", "--audio", Wav(), "--text", "describe this sound");
        Assert.True(r.ExitCode == 0, r.ToString());
        // boa, audio_soft_tokens_per_image (3) audio tokens, eoa, the words
        Assert.Contains("tokens from Gemma3nProcessor in", r.Stdout);
        Assert.Contains("with audio speech.wav: 252,265,265,265,253,12,13,14", r.Stdout);
        // the engine's tower, judged module by module, then its soft tokens through the engine's embedder
        foreach (var module in new[] { "model.audio_tower.subsample_conv_projection.conv_0", "model.audio_tower.conformer.0.attention.attn",
                     "model.audio_tower.conformer.1.lconv1d", "model.audio_tower ", "model.embed_audio.soft_embedding_norm" })
            Assert.Contains(module, r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void In_bf16_a_wav_file_compares_clean_through_the_engines_audio_tower()
    {
        var r = Compare("--model", Model(Harness.Engine.Tensors.DType.BFloat16), "--dtype", "bf16", "--audio", Wav(), "--text", "hello");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("model.audio_tower.conformer.0.attention.attn", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
    }

    [SkippableFact]
    public void In_bf16_the_subsampling_norm_with_a_plain_mean_is_caught_at_the_first_conv_block()
    {
        var r = Compare("--model", Model(Harness.Engine.Tensors.DType.BFloat16), "--dtype", "bf16", "--audio", Wav(), "--text", "hello",
            "--fault", "cumulative-norm-plain-mean");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("fault 'cumulative-norm-plain-mean' caught at model.audio_tower.subsample_conv_projection.conv_0", r.Stdout);
    }

    /// <summary>
    /// In fp32: on this model (context left 5, right 0) the missing shift moves block 0's attention by a relative L2 of 1.7e-2
    /// in bf16, inside the bf16 tower bound (3e-2), so bf16 first sees it at block 1; the catalog's tower model (left 4,
    /// right 2) shows it at block 0 in both dtypes (13 %).
    /// </summary>
    [SkippableFact]
    public void The_attention_without_its_relative_shift_is_caught_at_the_first_blocks_attention()
    {
        var r = Compare("--model", Model(), "--audio", Wav(), "--text", "hello", "--fault", "usm-rel-shift-skipped");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("fault 'usm-rel-shift-skipped' caught at model.audio_tower.conformer.0.attention.attn", r.Stdout);
    }

    [SkippableFact]
    public void The_embedder_built_input_is_parallel_is_caught_at_its_projection_at_tp2()
    {
        var r = Compare("--model", Model(), "--tp", "2", "--audio", Wav(), "--text", "hello", "--fault", "row-parallel-input-is-parallel");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("fault 'row-parallel-input-is-parallel' caught at model.embed_vision.embedding_projection", r.Stdout);
    }
}

/// <summary>
/// `compare --image FILE` on a Gemma3n checkpoint with its vision tower (tiny-gemma3n-vision: timm's MobileNetV5 at
/// channel_multiplier 0.025, a 64 x 64 input) and its processor: HF runs timm's tower (the vendored timm in the
/// reference's chroot), the engine its own MobileNetV5Encoder on the same pixel values, every tower module judged, then
/// the soft tokens through embed_vision and the decoder. Each planted tower bug is caught at its module, fp32 and bf16.
/// </summary>
[Trait("Tier", "Live")]
public sealed class CompareGemma3nImageTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-e2e-gemma3n-image-" + Guid.NewGuid().ToString("N"));
    private ScenarioContext? _context;

    public void Dispose()
    {
        _context?.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private string Model(Harness.Engine.Tensors.DType dtype = Harness.Engine.Tensors.DType.Float32)
    {
        LiveCliTests.RequireReference();
        Directory.CreateDirectory(_dir);
        ReferenceWorker.Shared.Start();
        _context = ScenarioContext.Live(ReferenceClient.Shared);
        return TinyGemma3nProcessor.VisionDirectory(_context, dtype);
    }

    private CliProcess.Result Compare(params string[] args)
    {
        var r = CliProcess.Run(["compare", .. args], null, timeoutSeconds: 600);
        output.WriteLine(r.ToString());
        return r;
    }

    /// <summary>
    /// fp32 at TP=2: every tower, embedder and decoder row within its bound against the float64 oracle, the precision
    /// budget within its limit and the tokens identical. The bug report (notes/issue-22-visionprec.md): DIVERGED on the
    /// budget alone (geometric mean of the engine's error over the reference's 3.1-3.5, limit 3), because the tower's
    /// long conv reductions (the MultiQueryAttention output projection's 1536 terms) ran in one float32 FMA chain, twice
    /// torch's error; with the reduction in blocks the mean reads 0.91.
    /// </summary>
    [SkippableFact]
    public void An_image_file_compares_through_the_engines_own_mobilenet_and_its_embedder_at_tp2_every_row_within_its_bound()
    {
        var r = Compare("--model", Model(), "--tp", "2", "--image", CompareGemma4MediaTests.Bmp(_dir), "--text", "describe this");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("comparison: PASS (engine and reference agree)", r.Stdout);
        var rows = System.Text.RegularExpressions.Regex.Match(r.Stdout, @"layer comparison: \w+ \((\d+) of (\d+) rows without failure\)");
        Assert.True(rows.Success && rows.Groups[1].Value == rows.Groups[2].Value, r.ToString());
        Assert.Contains("token comparison: PASS", r.Stdout);
        // boi, vision_soft_tokens_per_image (4) image tokens, eoi, the words
        Assert.Contains("with image photo.bmp: 250,257,257,257,257,251,12,13", r.Stdout);
        foreach (var module in new[] { "model.vision_tower.timm_model.conv_stem", "model.vision_tower.timm_model.blocks.2.9.attn",
                     "model.vision_tower.timm_model.blocks.3.38", "model.vision_tower.timm_model.msfa", "model.vision_tower ", "model.embed_vision.soft_embedding_norm" })
            Assert.Contains(module, r.Stdout);
    }

    [SkippableFact]
    public void In_bf16_an_image_file_compares_clean_through_the_engines_mobilenet()
    {
        var r = Compare("--model", Model(Harness.Engine.Tensors.DType.BFloat16), "--dtype", "bf16", "--image", CompareGemma4MediaTests.Bmp(_dir), "--text", "hello");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("model.vision_tower.timm_model.msfa", r.Stdout);
        Assert.Contains("comparison: PASS", r.Stdout);
    }

    // One fault end to end (the bf16 residual fault is caught at blocks.1.1 by the catalog's gemma3n/tp1/vision-tower/bf16
    // scenario, live and offline; its E2E twin cost 45 s of CI).
    [SkippableTheory]
    [InlineData("fp32", "mobilenet-same-pad-symmetric", "model.vision_tower.timm_model.conv_stem")]
    public void A_planted_tower_bug_is_caught_at_its_module(string dtype, string fault, string module)
    {
        var model = Model(dtype == "bf16" ? Harness.Engine.Tensors.DType.BFloat16 : Harness.Engine.Tensors.DType.Float32);
        var r = Compare("--model", model, "--dtype", dtype, "--image", CompareGemma4MediaTests.Bmp(_dir), "--text", "hello", "--fault", fault);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains($"fault '{fault}' caught at {module}", r.Stdout);
    }
}
