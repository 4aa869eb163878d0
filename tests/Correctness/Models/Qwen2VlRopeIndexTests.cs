using Harness.Engine.Config;
using Harness.Engine.Models.Qwen2Vl;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// get_rope_index as HF 5.12 computes it (values checked against Qwen2VLModel.get_rope_index by hand in the model notes):
/// text runs continue 1D, an image run takes (t, h, w) offsets from the position after the text, and the text after it
/// resumes at max(H, W)/merge past that start; rope_delta = max + 1 - tokens shifts every decode position.
/// </summary>
public class Qwen2VlRopeIndexTests
{
    private static Qwen2VlConfig Config(int merge) => Qwen2VlConfig.From(HfConfig.Parse(
        TinyQwen2Vl.Config().ToJsonString().Replace("\"spatial_merge_size\":3", $"\"spatial_merge_size\":{merge}", StringComparison.Ordinal), "tiny"));

    [Fact]
    public void One_image_of_grid_1x4x4_between_text_runs_gives_HFs_positions_and_delta_minus_2()
    {
        var c = Config(2);
        long img = c.ImageTokenId;
        long[] ids = [1, 5, c.VisionStartTokenId, img, img, img, img, c.VisionEndTokenId, 6, 7];
        var (pos, delta) = Qwen2VlRope.RopeIndex(ids, c, [new GridThw(1, 4, 4)], []);
        Assert.Equal([0, 1, 2, 3, 3, 3, 3, 5, 6, 7], pos[0]);
        Assert.Equal([0, 1, 2, 3, 3, 4, 4, 5, 6, 7], pos[1]);
        Assert.Equal([0, 1, 2, 3, 4, 3, 4, 5, 6, 7], pos[2]);
        Assert.Equal(-2, delta);
    }

    [Fact]
    public void A_video_of_two_temporal_patches_advances_t_per_frame_and_ignores_T_afterwards()
    {
        var c = Config(2);
        long vid = c.VideoTokenId;
        long[] ids = [1, c.VisionStartTokenId, vid, vid, vid, vid, c.VisionEndTokenId, 6];
        var (pos, delta) = Qwen2VlRope.RopeIndex(ids, c, [], [new GridThw(2, 2, 4)]);   // 2 frames of 1 x 2 merged tokens
        Assert.Equal([0, 1, 2, 2, 3, 3, 4, 5], pos[0]);
        Assert.Equal([0, 1, 2, 2, 2, 2, 4, 5], pos[1]);
        Assert.Equal([0, 1, 2, 3, 2, 3, 4, 5], pos[2]);
        Assert.Equal(-2, delta);
    }

    [Fact]
    public void A_placeholder_run_that_does_not_match_its_grid_is_an_error_naming_both()
    {
        var c = Config(2);
        long img = c.ImageTokenId;
        var e = Assert.Throws<ArgumentException>(() => Qwen2VlRope.RopeIndex([1, img, img, img, 2], c, [new GridThw(1, 4, 4)], []));
        Assert.Contains("image 0 has 3 placeholder tokens", e.Message);
        Assert.Contains("(1, 4, 4) merges to 4", e.Message);
    }
}
