using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Models.Gemma4;
using Harness.Engine.Tensors;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// compare --video on Gemma4: HF's Gemma4Model runs a video's frames through the vision tower and embed_vision
/// (get_video_features) and scatters them at video_token_id, as it scatters an image's at image_token_id. So the engine's
/// prefill with a frame's soft tokens at video tokens must equal the same soft tokens as an image at image tokens (the
/// recorded tiny E2B-like model: no bidirectional vision blocks, so the two prompts differ only in the ids that are
/// replaced by pad before embed_tokens); and the frames handed as an image to a prompt of video tokens (a port that
/// routes the video through the image path) must be refused, naming both counts, not merged somewhere else.
/// </summary>
public class Gemma4VideoTokensTests
{
    private static readonly string Dir = Path.Combine(Fixtures.DefaultDirectory(), "models", "tiny-gemma4-e2b-like-mm-fp32");

    private static Tensor Prefill(long[] prompt, Gemma4ForConditionalGeneration.TowerOutputs towers)
    {
        using var checkpoint = Checkpoint.Open(Dir);
        var model = new Gemma4ForConditionalGeneration(new CheckpointWeights(checkpoint), HfConfig.Load(Path.Combine(Dir, "config.json")), ParallelContext.Single);
        return model.Prefill(Tensor.FromArray(prompt, prompt.Length), towers);
    }

    private static (long Image, long Video, long Boi, long Eoi, int VisionHidden) Ids()
    {
        var c = HfConfig.Load(Path.Combine(Dir, "config.json"));
        return (c.GetInt("image_token_id"), c.GetInt("video_token_id"), c.GetInt("boi_token_id"), c.GetInt("eoi_token_id"), c.GetInt("vision_config.hidden_size"));
    }

    private static long[] Prompt(long placeholder, int n)
    {
        var (_, _, boi, eoi, _) = Ids();
        return [2, 10, boi, .. Enumerable.Repeat(placeholder, n), eoi, 11, 12];
    }

    [Fact]
    public void A_videos_frames_at_video_tokens_give_the_logits_of_the_same_soft_tokens_as_an_image()
    {
        var (image, video, _, _, hidden) = Ids();
        var frames = Tensor.Normal(DType.Float32, 91, 0, 1, 6, hidden);              // [2 frames x 3 soft tokens, vision hidden]
        var asVideo = Prefill(Prompt(video, 6), new Gemma4ForConditionalGeneration.TowerOutputs(null, null, null, frames));
        var asImage = Prefill(Prompt(image, 6), new Gemma4ForConditionalGeneration.TowerOutputs(frames, null, null));
        Assert.Equal(asImage.ToFloatArray(), asVideo.ToFloatArray());
        // and the soft tokens are really merged: other frames give other logits
        var other = Prefill(Prompt(video, 6), new Gemma4ForConditionalGeneration.TowerOutputs(null, null, null, Tensor.Normal(DType.Float32, 92, 0, 1, 6, hidden)));
        Assert.NotEqual(asVideo.ToFloatArray(), other.ToFloatArray());
    }

    [Fact]
    public void A_video_handed_over_as_an_image_is_refused_naming_the_counts()
    {
        var (_, video, _, _, hidden) = Ids();
        var frames = Tensor.Normal(DType.Float32, 91, 0, 1, 6, hidden);
        var e = Assert.ThrowsAny<Exception>(() => Prefill(Prompt(video, 6), new Gemma4ForConditionalGeneration.TowerOutputs(frames, null, null)));
        Assert.Contains("image features and image tokens do not match, tokens: 0", e.Message);
    }
}
