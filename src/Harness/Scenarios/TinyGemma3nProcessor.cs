using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// The tiny Gemma3n (<see cref="TinyGemma3n"/>, the reference's vision tower stubbed) with its own processor saved beside
/// the weights, as a user's checkpoint folder has one (compare --audio FILE.wav): a word-level tokenizer whose special
/// tokens carry the model's boi/eoi, image, boa/eoa and audio ids, Gemma3nAudioFeatureExtractor with the model's
/// input_feat_size, and Gemma3nProcessor's audio_seq_length equal to the config's audio_soft_tokens_per_image (the
/// processor expands every audio placeholder to that many tokens). The extractor's rate, band, preemphasis, mel floor and
/// scale are off the library defaults (16 kHz, 125-7600 Hz, 0.97, 1e-5, 1); its frame and hop lengths stay at 32 and 10 ms
/// (transformers 5.12.1 does not read them back from the saved file). A SigLIP image processor is saved because
/// Gemma3nProcessor needs one (this model's vision tower is the stub: it takes no image; <see cref="VisionDirectory"/> does).
/// </summary>
public static class TinyGemma3nProcessor
{
    public const string ModelName = "tiny-gemma3n-processor";

    /// <summary>The feature extractor's sampling rate.</summary>
    public const int SamplingRate = 8000;

    /// <summary>The words the tokenizer knows besides the special tokens (ids from 10).</summary>
    public static readonly string[] Words = ["hello", "world", "describe", "this", "sound"];

    public static JsonObject Vocab()
    {
        var vocab = new JsonObject { ["<pad>"] = 0, ["<eos>"] = 1, ["<bos>"] = 2, ["<unk>"] = 3 };
        for (int i = 0; i < Words.Length; i++) vocab[Words[i]] = 10 + i;
        var c = TinyGemma3n.Config();
        foreach (var (token, key) in new[] { ("<boi>", "boi_token_id"), ("<eoi>", "eoi_token_id"), ("<image_soft_token>", "image_token_id"),
                     ("<boa>", "boa_token_id"), ("<eoa>", "eoa_token_id"), ("<audio_soft_token>", "audio_token_id") })
            vocab[token] = (int)c[key]!;
        return vocab;
    }

    public static JsonObject AudioSettings() => new()
    {
        ["feature_size"] = TinyGemma3n.AudioFeatureSize,        // library: 128
        ["sampling_rate"] = SamplingRate,                       // library: 16000
        ["min_frequency"] = 60.0,                               // library: 125
        ["max_frequency"] = 3800.0,                             // library: 7600
        ["preemphasis"] = 0.5,                                  // library: 0.97
        ["mel_floor"] = 1e-3,                                   // library: 1e-5
        ["input_scale_factor"] = 2.0,                           // library: 1
    };

    /// <summary>The chat template: bos, then one user turn of sounds and text.</summary>
    public const string ChatTemplate =
        "{{ bos_token }}{% for m in messages %}{% for c in m['content'] %}" +
        "{% if c['type'] == 'audio' %}<audio_soft_token>{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}";

    /// <summary>The folder (live: the tiny model built by the reference and the processor beside it).</summary>
    public static string Directory(ScenarioContext context, DType dtype = DType.Float32) => Build(context, dtype, vision: false);

    /// <summary>
    /// The same with a real vision tower (compare --image FILE): <see cref="TinyGemma3nVision"/>'s model (timm's MobileNetV5,
    /// built from the vendored timm) and an image processor that resizes to its 64 x 64 input, the placeholder expanded to
    /// its 4 soft tokens; the chat template takes images too.
    /// </summary>
    public static string VisionDirectory(ScenarioContext context, DType dtype = DType.Float32) => Build(context, dtype, vision: true);

    /// <summary>The chat template with images: bos, then one user turn of images, sounds and text.</summary>
    public const string VisionChatTemplate =
        "{{ bos_token }}{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image_soft_token>" +
        "{% elif c['type'] == 'audio' %}<audio_soft_token>{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}";

    private static string Build(ScenarioContext context, DType dtype, bool vision) =>
        context.ModelDirectory(vision ? VisionModelName : ModelName, dtype, (client, dir) =>
    {
        var c = vision ? TinyGemma3nVision.Config() : TinyGemma3n.Config();
        var build = new JsonObject
        {
            ["config"] = c.DeepClone(), ["seed"] = TinyGemma3n.Seed, ["dtype"] = dtype.TorchName(), ["out_dir"] = client.WorkerPath(dir),
        };
        if (vision) build["vision_tower"] = "timm";
        client.Invoke("gemma3n_build", build);
        int side = vision ? TinyGemma3nVision.ImageSize : 32;
        client.Invoke("save_processor", new JsonObject
        {
            ["family"] = "gemma3n",
            ["out_dir"] = client.WorkerPath(dir),
            ["vocab"] = Vocab(),
            ["special"] = new JsonObject
            {
                ["unk_token"] = "<unk>", ["bos_token"] = "<bos>", ["eos_token"] = "<eos>", ["pad_token"] = "<pad>",
                ["image_token"] = "<image_soft_token>", ["audio_token"] = "<audio_soft_token>", ["boi_token"] = "<boi>", ["eoi_token"] = "<eoi>",
                ["boa_token"] = "<boa>", ["eoa_token"] = "<eoa>",
            },
            ["processor"] = new JsonObject { ["size"] = new JsonObject { ["height"] = side, ["width"] = side } },
            ["feature_extractor"] = AudioSettings(),
            ["processor_fields"] = new JsonObject
            {
                ["audio_seq_length"] = (int)c["audio_soft_tokens_per_image"]!, ["image_seq_length"] = (int)c["vision_soft_tokens_per_image"]!,
            },
            ["chat_template"] = vision ? VisionChatTemplate : ChatTemplate,
        });
        return dir;
    });

    public const string VisionModelName = "tiny-gemma3n-vision-processor";
}
