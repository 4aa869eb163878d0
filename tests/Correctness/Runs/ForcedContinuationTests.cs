using Harness.Engine.IO;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Harness.Runs;
using Harness.Scenarios;
using Harness.Tests.Correctness.Scenarios;

namespace Harness.Tests.Correctness.Runs;

/// <summary>
/// Issue 21 item 3 for every family that generates besides Llama: a near tie at an early step no longer ends the token
/// check. The reference's step 0 is made a near tie between its own pick and its second choice, and the reference is
/// continued on that second choice (each later step the correct engine's pick, teacher-forced on the tokens before it,
/// through the scenario itself); the engine's free run takes the other side of the tie at step 0. A correct engine then
/// passes with every later step compared on its teacher-forced decoding, and an engine that is wrong only after the tie
/// (right at the prompt: every prompt module passes) fails at a teacher-forced step, where it passed before
/// (TokenComparison without the forced decoding: "the later steps are not compared").
/// The wrong engines act only on decode steps: Gemma3n's and Gemma4's per-layer embedding row of the token fed after the
/// tie negated (a table row the prompt never reads), Qwen2-VL's decode steps without the prompt's M-RoPE rope delta
/// (<see cref="Faults.MropeDecodeDeltaIgnored"/>: the forced steps' positions).
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class ForcedContinuationTests : IDisposable
{
    private readonly string _scratch = Directory.CreateTempSubdirectory("forced-continuation-").FullName;

    public void Dispose() => Directory.Delete(_scratch, recursive: true);

    public static TheoryData<string> PerLayerEmbeddingFamilies => new()
    {
        "gemma3n/tp1/text/fp32",
        "gemma3n/tp1/soft-tokens/fp32",
        "gemma4/e2b-like/tp1/text/fp32",
        "gemma4/e2b-like/tp1/image/fp32",
        "gemma4/e2b-like/tp1/audio/fp32",
    };

    [Theory]
    [MemberData(nameof(PerLayerEmbeddingFamilies))]
    public void A_near_tie_at_step_0_then_a_wrong_per_layer_embedding_of_the_tied_token_fails_on_the_forced_steps(string id)
    {
        // the doctored reference's step captures are of the recorded tokens, not the tied ones: the token verdict alone here
        var scenario = (ScenarioCatalog.Find(id) ?? throw new InvalidOperationException($"no scenario {id}")) with { JudgeSteps = false };
        var context = CatalogContexts.Recorded;
        var (tied, tie) = TiedReference(scenario, context);
        var wrong = context.WithConfigMutation(dir => NegatedPerLayerRow(dir, tie));
        Check(scenario, context, scenario, wrong, tied);
    }

    [Theory]
    [InlineData("qwen2-vl/tp1/image/fp32")]
    [InlineData("qwen2-vl/tp1/video/fp32")]
    public void A_near_tie_at_step_0_then_decode_steps_without_the_mrope_delta_fails_on_the_forced_steps(string id)
    {
        var scenario = (ScenarioCatalog.Find(id) ?? throw new InvalidOperationException($"no scenario {id}")) with { JudgeSteps = false };
        var context = CatalogContexts.Recorded;
        var (tied, _) = TiedReference(scenario, context);
        Check(scenario, context, scenario with { Fault = Faults.MropeDecodeDeltaIgnored }, context, tied);
    }

    private static void Check(Scenario scenario, ScenarioContext context, Scenario wrongScenario, ScenarioContext wrongContext, ReferenceBundle tied)
    {
        int steps = tied.Tokens!.Length;
        var ok = scenario.RunEngine(context, tied);
        Assert.True(ok.Passed, ok.Describe());
        Assert.Equal(TokenVerdict.AcceptedDivergence, ok.Tokens!.Verdict);
        Assert.Equal(0, ok.Tokens.FirstDivergentStep);
        Assert.Equal(steps - 1, ok.Tokens.ForcedSteps);
        Assert.Contains($"the {steps - 1} later steps compared teacher-forced", ok.Tokens.Reason);

        var bad = wrongScenario.RunEngine(wrongContext, tied);
        Assert.True(bad.Layers.Passed, bad.Describe());                          // right at the prompt: every module passes
        Assert.Equal(0, bad.Tokens!.FirstDivergentStep);                         // the same side of the tie as the correct engine
        // what passed before: the near tie ended the check
        var before = TokenComparison.Run(tied.Tokens, bad.EngineTokens!, logprobTolerance: TokenComparison.FallbackLogprobTolerance(scenario.DType));
        Assert.True(before.Passed, before.ToString());
        Assert.Contains("not compared", before.Reason);
        Assert.False(bad.Passed, bad.Describe());
        Assert.False(bad.Tokens.Passed, bad.Tokens.ToString());
        Assert.Equal(steps - 1, bad.Tokens.ForcedSteps);
        Assert.True(bad.Tokens.MaxLogprobDiffStep >= 1, bad.Tokens.ToString());  // caught after the tie
    }

    /// <summary>
    /// The recorded reference with a near tie at step 0: its token there is its second choice (0.01 nats below its first,
    /// within the margin), and every later step is what the correct engine picks teacher-forced on the tokens before it
    /// (its fp32 logprobs stand for HF's: they agree to ~1e-6 on these models). No oracle logprobs: a doctored tie is no
    /// float64 tie, so the margin rule judges it. Returns the bundle and the tied token (the one fed after the tie).
    /// </summary>
    private static (ReferenceBundle Bundle, long Tie) TiedReference(Scenario scenario, ScenarioContext context)
    {
        var recorded = context.Reference(scenario);
        var rt = recorded.Tokens!;
        var first = rt.SortedTopK(0);
        Assert.Equal(rt.Tokens[0], first[0].Token);
        var prompt = scenario.Inputs(context)["input_ids"].ToInt64Array();
        long tie = first.Skip(1).First(e => !prompt.Contains(e.Token)).Token;   // a token the prompt does not read
        var tokens = (long[])rt.Tokens.Clone();
        tokens[0] = tie;
        TokenSequence? forced = null;
        for (int step = 1; step < rt.Length; step++)
        {
            var run = scenario.RunEngine(context, recorded with { Tokens = new TokenSequence((long[])tokens.Clone(), rt.TopK) });
            forced = run.EngineForcedTokens ?? throw new InvalidOperationException($"{scenario.Id}: no teacher-forced decoding after a divergence at step 0");
            // fed the tied token instead of its own pick, the engine's step 1 is another distribution than its free run's
            var free = run.EngineTokens!;
            Assert.Contains(free.TopK[1], e => forced.LogprobOf(1, e.Token) is not double f || Math.Abs(f - e.Logprob) > 1e-3);
            tokens[step] = forced.Tokens[step];
        }
        var topk = new List<IReadOnlyList<TokenLogprob>>
        {
            rt.TopK[0].Select(e => e.Token == tie ? e with { Logprob = first[0].Logprob - 0.01 } : e).ToList(),
        };
        topk.AddRange(forced!.TopK.Skip(1));
        return (recorded with { Tokens = new TokenSequence(tokens, topk) }, tie);
    }

    /// <summary>A copy of the model folder whose per-layer embedding row of <paramref name="token"/> is negated.</summary>
    private string NegatedPerLayerRow(string dir, long token)
    {
        var copy = Path.Combine(_scratch, Path.GetFileName(dir.TrimEnd('/')) + "-row" + token);
        if (Directory.Exists(copy)) return copy;
        Directory.CreateDirectory(copy);
        foreach (var file in Directory.GetFiles(dir)) File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        var path = Path.Combine(copy, "model.safetensors");
        Dictionary<string, Tensor> tensors;
        IReadOnlyDictionary<string, string> metadata;
        using (var file = SafetensorsFile.Open(path))
        {
            tensors = file.Names.ToDictionary(n => n, n => file.ReadTensor(n).Clone());
            metadata = new Dictionary<string, string>(file.Metadata);
        }
        var name = tensors.Keys.Single(n => n.EndsWith("embed_tokens_per_layer.weight", StringComparison.Ordinal));
        var row = tensors[name].Select(0, (int)token);                            // [layers * per-layer hidden]
        var negated = row.To(DType.Float32).ToFloatArray().Select(v => -v).ToArray();
        row.CopyFrom(Tensor.FromArray(negated, negated.Length).To(row.DType));
        SafetensorsWriter.Save(path, tensors, metadata);
        return copy;
    }
}
