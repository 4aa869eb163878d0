using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>
/// The qwen2-vl catalog entries: every input (text, one image, two images of different grids, a 2-frame video) and
/// every TP size (1, 2, 4) at least once in float32, sequence parallelism at TP=2 and 4, bfloat16 at TP=1 and TP=4, and scenario 3's bug (the attention
/// output viewed with the full hidden_size): invisible at TP=1, fatal at model.language_model.layers.0.self_attn
/// under TP=4.
/// </summary>
public static class Qwen2VlScenarios
{
    public const string ReshapeModule = "model.language_model.layers.0.self_attn";

    public static IEnumerable<Scenario> All()
    {
        foreach (var media in Enum.GetValues<Qwen2VlMedia>())
            yield return new Qwen2VlScenario(1, media);
        yield return new Qwen2VlScenario(2, Qwen2VlMedia.Image);
        yield return new Qwen2VlScenario(2, Qwen2VlMedia.Video);
        yield return new Qwen2VlScenario(4, Qwen2VlMedia.Text);
        yield return new Qwen2VlScenario(4, Qwen2VlMedia.Image);
        yield return new Qwen2VlScenario(4, Qwen2VlMedia.TwoImages);
        yield return new Qwen2VlScenario(2, Qwen2VlMedia.Image, sp: true);       // 15 tokens padded to 16
        yield return new Qwen2VlScenario(4, Qwen2VlMedia.Text, sp: true);        // 7 tokens padded to 8, decode steps padded to 4
        yield return new Qwen2VlScenario(1, Qwen2VlMedia.Image, DType.BFloat16);
        yield return new Qwen2VlScenario(4, Qwen2VlMedia.Image, DType.BFloat16);
        // Scenario 3, as reported: the fault passes unseen at TP=1 and fails at self_attn under TP=4.
        yield return new Qwen2VlScenario(1, Qwen2VlMedia.Image, fault: Faults.AttentionReshapeHiddenSize);
        yield return new Qwen2VlScenario(4, Qwen2VlMedia.Image, fault: Faults.AttentionReshapeHiddenSize, expectedFirstBadModule: ReshapeModule);
        // ... and with the reported dims: Qwen2-VL-7B's first attention, 359 tokens, TP=4 (the exact message).
        yield return new Qwen2Vl7BAttentionScenario(Faults.AttentionReshapeHiddenSize);
    }
}
