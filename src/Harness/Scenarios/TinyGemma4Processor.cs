using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// The tiny E2B-like Gemma4ForConditionalGeneration of the tower scenarios (<see cref="TinyGemma4Towers"/>: both towers,
/// every tower field off HF's default) with its own processor saved beside the weights, as a user's checkpoint folder has
/// one (compare --image FILE / --audio FILE.wav): a word-level tokenizer whose special tokens carry the model's image,
/// audio, boi/eoi and boa/eoa ids, Gemma4ImageProcessor with the model's patch and pooling sizes, and
/// Gemma4AudioFeatureExtractor with the model's mel bin count. Every other processor field is off the library default
/// (Gemma4ImageProcessor: max_soft_tokens 280, rescale 1/255, no normalisation, bicubic; Gemma4AudioFeatureExtractor:
/// 16 kHz, 0-8000 Hz, mel floor 1e-3, no preemphasis, no scale, no per-bin statistics; its frame and hop lengths stay at
/// 20 and 10 ms, which are all HF's save and load round-trip), so a
/// path that used the library's processor instead of the checkpoint's gives other ids, pixel values or features.
/// </summary>
public static class TinyGemma4Processor
{
    public const string ModelName = "tiny-gemma4-processor";

    /// <summary>The feature extractor's sampling rate: a WAV at another rate is refused, naming both.</summary>
    public const int SamplingRate = 8000;

    /// <summary>Soft tokens per image at most (the smallest Gemma4ImageProcessor allows): max patches 70 * pooling^2 = 280.</summary>
    public const int MaxSoftTokens = 70;

    /// <summary>The words the tokenizer knows besides the special tokens (ids from 10).</summary>
    public static readonly string[] Words = ["hello", "world", "describe", "this", "picture", "sound"];

    /// <summary>Token ids: pad 0, eos 1, bos 2, unk 3, the words from 10, and the model config's special ids.</summary>
    public static JsonObject Vocab()
    {
        var vocab = new JsonObject { ["<pad>"] = 0, ["<eos>"] = 1, ["<bos>"] = 2, ["<unk>"] = 3 };
        for (int i = 0; i < Words.Length; i++) vocab[Words[i]] = 10 + i;
        var c = TinyGemma4Towers.Config();
        vocab["<|image|>"] = (int)c["image_token_id"]!;
        vocab["<|audio|>"] = (int)c["audio_token_id"]!;
        vocab["<|video|>"] = (int)c["video_token_id"]!;
        vocab["<boi>"] = (int)c["boi_token_id"]!;
        vocab["<eoi>"] = (int)c["eoi_token_id"]!;
        vocab["<boa>"] = (int)c["boa_token_id"]!;
        vocab["<eoa>"] = (int)c["eoa_token_index"]!;
        return vocab;
    }

    /// <summary>Gemma4ImageProcessor's settings: the model's patch and pooling sizes, everything else off the library defaults.</summary>
    public static JsonObject ImageSettings()
    {
        var vision = TinyGemma4Towers.Config()["vision_config"]!;
        return new JsonObject
        {
            ["patch_size"] = (int)vision["patch_size"]!,
            ["pooling_kernel_size"] = (int)vision["pooling_kernel_size"]!,
            ["max_soft_tokens"] = MaxSoftTokens,                // library: 280
            ["do_normalize"] = true,                            // library: false (mean 0, std 1)
            ["image_mean"] = new JsonArray(0.40, 0.50, 0.60),
            ["image_std"] = new JsonArray(0.20, 0.25, 0.30),
            ["rescale_factor"] = 1.0 / 200,                     // library: 1 / 255
            ["resample"] = 2,                                   // library: 3 (bicubic)
        };
    }

    /// <summary>Gemma4AudioFeatureExtractor's settings: the model's mel bins, everything else off the library defaults.</summary>
    public static JsonObject AudioSettings() => new()
    {
        ["feature_size"] = TinyGemma4Towers.MelBins,            // library: 128
        ["sampling_rate"] = SamplingRate,                       // library: 16000
        // frame_length_ms / hop_length_ms stay at 20 / 10 (160 / 80 samples at 8 kHz): transformers 5.12.1 saves them as
        // frame_length / hop_length in samples, which from_pretrained does not read back (a 25 ms extractor reloads as 20 ms)
        ["min_frequency"] = 60.0,                               // library: 0
        ["max_frequency"] = 3800.0,                             // library: 8000
        ["mel_floor"] = 1e-2,                                   // library: 1e-3
        ["preemphasis"] = 0.4,                                  // library: 0
        ["input_scale_factor"] = 2.0,                           // library: 1
        ["per_bin_mean"] = new JsonArray(Enumerable.Range(0, TinyGemma4Towers.MelBins).Select(i => (JsonNode)(-3.0 + 0.125 * i)).ToArray()),
        ["per_bin_stddev"] = new JsonArray(Enumerable.Range(0, TinyGemma4Towers.MelBins).Select(i => (JsonNode)(1.5 + 0.0625 * i)).ToArray()),
    };

    /// <summary>Frames a video is sampled to (Gemma4VideoProcessor's num_frames; library: 32).</summary>
    public const int VideoFrames = 2;

    /// <summary>Soft tokens per video frame at most (library: 70): max patches 16 * pooling^2 = 64.</summary>
    public const int VideoSoftTokens = 16;

    /// <summary>
    /// Gemma4VideoProcessor's settings over the image processor's patch and pooling sizes: frames sampled and soft tokens a
    /// frame off the library defaults, normalised and rescaled as the image processor is (library: mean 0, std 1, 1/255,
    /// bicubic).
    /// </summary>
    public static JsonObject VideoSettings()
    {
        var image = ImageSettings();
        return new JsonObject
        {
            ["num_frames"] = VideoFrames,
            ["max_soft_tokens"] = VideoSoftTokens,
            ["image_mean"] = image["image_mean"]!.DeepClone(),
            ["image_std"] = image["image_std"]!.DeepClone(),
            ["rescale_factor"] = image["rescale_factor"]!.DeepClone(),
            ["resample"] = image["resample"]!.DeepClone(),
        };
    }

    /// <summary>Gemma4Processor's own fields (library: image_seq_length 280, audio_seq_length 750).</summary>
    public static JsonObject ProcessorFields() => new() { ["image_seq_length"] = MaxSoftTokens, ["audio_seq_length"] = 100 };

    /// <summary>The chat template: bos, then one user turn of pictures, clips, sounds and text.</summary>
    public const string ChatTemplate =
        "{{ bos_token }}{% for m in messages %}{% for c in m['content'] %}" +
        "{% if c['type'] == 'image' %}<|image|>{% elif c['type'] == 'video' %}<|video|>{% elif c['type'] == 'audio' %}<|audio|>" +
        "{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}";

    /// <summary>The folder (live: built by the reference; the tiny towers model's weights and the processor beside them).</summary>
    public static string Directory(ScenarioContext context, DType dtype = DType.Float32) => context.ModelDirectory(ModelName, dtype, (client, dir) =>
    {
        client.Invoke("gemma4_towers_build", new JsonObject
        {
            ["config"] = TinyGemma4Towers.Config(), ["seed"] = TinyGemma4Towers.Seed, ["dtype"] = dtype.TorchName(), ["out_dir"] = client.WorkerPath(dir),
        });
        SaveProcessor(client, dir);
        return dir;
    });

    /// <summary>Writes the tokenizer and a Gemma4Processor with these settings into <paramref name="dir"/>.</summary>
    public static void SaveProcessor(ReferenceClient client, string dir) =>
        client.Invoke("save_processor", new JsonObject
        {
            ["family"] = "gemma4",
            ["out_dir"] = client.WorkerPath(dir),
            ["vocab"] = Vocab(),
            ["special"] = new JsonObject
            {
                ["unk_token"] = "<unk>", ["bos_token"] = "<bos>", ["eos_token"] = "<eos>", ["pad_token"] = "<pad>",
                ["image_token"] = "<|image|>", ["audio_token"] = "<|audio|>", ["video_token"] = "<|video|>", ["boi_token"] = "<boi>", ["eoi_token"] = "<eoi>",
                ["boa_token"] = "<boa>", ["eoa_token"] = "<eoa>",
            },
            ["processor"] = ImageSettings(),
            ["video_processor"] = VideoSettings(),
            ["feature_extractor"] = AudioSettings(),
            ["processor_fields"] = ProcessorFields(),
            ["chat_template"] = ChatTemplate,
        });
}
