using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// The tiny Qwen2-VL (<see cref="TinyQwen2Vl"/>) with its own processor saved beside the weights, as a user's checkpoint
/// folder has one (compare --image FILE / --video FILE): a word-level tokenizer whose special tokens carry the model's
/// image/video/vision-start/vision-end ids, and Qwen2VLImageProcessor / Qwen2VLVideoProcessor with the model's patch,
/// merge and temporal sizes. No processor field sits on the library default (Qwen2VLImageProcessor's: min_pixels 3136,
/// max_pixels 1003520, CLIP mean/std, rescale 1/255, bicubic), so a path that used the library's processor instead of
/// the checkpoint's gives other pixel values.
/// </summary>
public static class TinyQwen2VlProcessor
{
    public const string ModelName = "tiny-qwen2-vl-processor";

    /// <summary>The words the tokenizer knows besides the special tokens.</summary>
    public static readonly string[] Words = ["hello", "world", "describe", "this", "picture", "clip"];

    /// <summary>Token ids: unk 0, bos 1, eos 2, the words from 5, and the model config's special ids.</summary>
    public static JsonObject Vocab()
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int i = 0; i < Words.Length; i++) vocab[Words[i]] = 5 + i;
        vocab["<|image_pad|>"] = TinyQwen2Vl.ImageToken;
        vocab["<|video_pad|>"] = TinyQwen2Vl.VideoToken;
        vocab["<|vision_start|>"] = TinyQwen2Vl.VisionStart;
        vocab["<|vision_end|>"] = TinyQwen2Vl.VisionEnd;
        return vocab;
    }

    /// <summary>The processors' settings: the model's own patch/merge/temporal sizes, everything else off the library defaults.</summary>
    public static JsonObject ProcessorSettings()
    {
        const int unit = TinyQwen2Vl.Patch * TinyQwen2Vl.Merge;
        return new JsonObject
        {
            ["patch_size"] = TinyQwen2Vl.Patch,
            ["temporal_patch_size"] = TinyQwen2Vl.TemporalPatch,
            ["merge_size"] = TinyQwen2Vl.Merge,
            ["min_pixels"] = unit * unit,                       // library: 56 * 56
            ["max_pixels"] = 3 * unit * 4 * unit,               // library: 28 * 28 * 1280; a 3 x 4 grid of merge blocks at most
            ["image_mean"] = new JsonArray(0.40, 0.50, 0.60),   // library: CLIP's 0.481, 0.458, 0.408
            ["image_std"] = new JsonArray(0.20, 0.25, 0.30),    // library: CLIP's 0.269, 0.261, 0.276
            ["rescale_factor"] = 1.0 / 200,                     // library: 1 / 255
            ["resample"] = 2,                                   // library: 3 (bicubic)
        };
    }

    /// <summary>The chat template: one user turn of pictures then text, each picture inside vision start/end.</summary>
    public const string ChatTemplate =
        "{{ bos_token }}{% for m in messages %}{% for c in m['content'] %}" +
        "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>" +
        "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>" +
        "{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}";

    /// <summary>The folder (live: built by the reference; the tiny model's weights and the processor beside them).</summary>
    public static string Directory(ScenarioContext context, DType dtype = DType.Float32) => context.ModelDirectory(ModelName, dtype, (client, dir) =>
    {
        client.BuildModel(TinyQwen2Vl.Config(), TinyQwen2Vl.Seed, dtype, dir, "Qwen2VLForConditionalGeneration");
        SaveProcessor(client, dir, ProcessorSettings());
        return dir;
    });

    /// <summary>Writes the tokenizer and a Qwen2VLProcessor with <paramref name="settings"/> into <paramref name="dir"/>.</summary>
    public static void SaveProcessor(ReferenceClient client, string dir, JsonObject settings) =>
        client.Invoke("save_processor", new JsonObject
        {
            ["family"] = "qwen2_vl",
            ["out_dir"] = client.WorkerPath(dir),
            ["vocab"] = Vocab(),
            ["special"] = new JsonObject
            {
                ["unk_token"] = "<unk>", ["bos_token"] = "<s>", ["eos_token"] = "</s>",
                ["image_token"] = "<|image_pad|>", ["video_token"] = "<|video_pad|>",
                ["vision_start_token"] = "<|vision_start|>", ["vision_end_token"] = "<|vision_end|>",
            },
            ["processor"] = settings,
            ["chat_template"] = ChatTemplate,
        });
}
