using Harness.Scenarios;
using Harness.Tests.Correctness.Live;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// The harness's core loop on a tiny random Llama in float32: the same weights in HF and in the engine, each layer's
/// output compared (shards and token slices against the matching part of HF's tensor), then greedy tokens compared,
/// for every parallel layout from input_ids and from prompt embeddings. 7 prompt tokens: SP pads them to 8.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public class LlamaParallelScenarioTests(ITestOutputHelper output)
{
    public static TheoryData<int, int, bool, InputKind> Layouts()
    {
        var data = new TheoryData<int, int, bool, InputKind>();
        foreach (var input in new[] { InputKind.InputIds, InputKind.PromptEmbeds })
        {
            data.Add(1, 1, false, input);   // TP=1
            data.Add(2, 1, false, input);   // TP=2
            data.Add(4, 1, false, input);   // TP=4: kv heads (2) replicated
            data.Add(2, 1, true, input);    // SP with TP=2
            data.Add(1, 2, false, input);   // PP=2
            data.Add(2, 2, true, input);    // SP + PP (TP=2, PP=2)
        }
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Layouts))]
    public void Engine_matches_HF_layer_by_layer_and_token_by_token(int tp, int pp, bool sp, InputKind input)
    {
        var result = LlamaRunnerFixture.Runner().Run(new LlamaScenario(tp, pp, sp, input));
        output.WriteLine(result.Describe());
        Assert.True(result.Passed, result.Describe());
    }

    [SkippableFact]
    public void Odd_prompt_length_that_needs_padding_under_SP_with_TP4()
    {
        var result = LlamaRunnerFixture.Runner().Run(new LlamaScenario(4, 1, true, InputKind.InputIds, PromptTokens: 5));
        output.WriteLine(result.Describe());
        Assert.True(result.Passed, result.Describe());
    }
}
