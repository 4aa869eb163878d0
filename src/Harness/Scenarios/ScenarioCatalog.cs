using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>
/// Every scenario the harness knows, by stable id. The xunit tests, `harness list/run/repro` and the nightly report
/// all read this one list; no scenario is written twice.
/// </summary>
public static class ScenarioCatalog
{
    public static IReadOnlyList<Scenario> All { get; } = Build();

    private static List<Scenario> Build()
    {
        var list = new List<Scenario>();

        // Scenario 1: matmul shapes (batch-invariant), Gemma4-E2B's 4D x 3D among them.
        list.Add(new MatmulScenario("gemma4-e2b-4dx3d", [1, 2, 32, 64], [2, 64, 16], DType.BFloat16));
        list.Add(new MatmulScenario("gemma4-e2b-4dx3d", [1, 2, 32, 64], [2, 64, 16], DType.Float32));
        list.Add(new MatmulScenario("2d-x-5d", [32, 64], [1, 2, 2, 64, 16], DType.Float32));
        list.Add(new MatmulScenario("broadcast-5d", [1, 2, 4, 32, 64], [1, 2, 4, 64, 16], DType.Float32));

        // Scenario 2: Gemma3n (decoder and both multimodal embedders) at TP=1 and TP=2, and the embedder's TP=2 bug.
        list.AddRange(Gemma3nScenarios.All());

        // Scenario 4 and the core loop: Llama under every layout, from input ids and from prompt embeds.
        foreach (var input in new[] { InputKind.InputIds, InputKind.PromptEmbeds })
        {
            list.Add(new LlamaScenario(1, 1, false, input));
            list.Add(new LlamaScenario(2, 1, false, input));
            list.Add(new LlamaScenario(4, 1, false, input));
            list.Add(new LlamaScenario(2, 1, true, input));
            list.Add(new LlamaScenario(1, 2, false, input));
            list.Add(new LlamaScenario(2, 2, true, input));
            list.Add(new LlamaScenario(2, 1, true, input, fault: Faults.SpResidualFirstSlice,
                expectedFirstBadModule: "model.layers.0.post_attention_layernorm"));
            list.Add(new LlamaScenario(2, 2, true, input, fault: Faults.SpPpResidualSliced, expectedFirstBadModule: "model.layers.2"));
        }
        list.Add(new LlamaScenario(4, 1, true, InputKind.InputIds, promptTokens: 5)); // 5 tokens padded to 8 over 4 ranks

        // bfloat16: every intermediate rounded to bf16, judged by the bf16 layer policy.
        list.Add(new LlamaScenario(1, 1, false, InputKind.InputIds, DType.BFloat16));
        list.Add(new LlamaScenario(2, 2, true, InputKind.InputIds, DType.BFloat16));
        list.Add(new LlamaScenario(2, 2, true, InputKind.InputIds, DType.BFloat16, fault: Faults.SpResidualFirstSlice,
            expectedFirstBadModule: "model.layers.0.post_attention_layernorm"));

        // Bugs the per-dtype oracle bound must catch at the module where they act, in bf16 as in fp32 (issue 21): a precision-only
        // one (the norm's sum of squares in bf16), a config field not read (rope_theta, rms_norm_eps), a residual branch scale.
        foreach (var dtype in new[] { DType.BFloat16, DType.Float32 })
        {
            list.Add(new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.RmsNormSumOfSquaresBf16,
                expectedFirstBadModule: "model.layers.0.input_layernorm"));
            list.Add(new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.RopeThetaDefault,
                expectedFirstBadModule: "model.layers.0.self_attn"));
            // the residual add is model.layers.0's own: fp32 sees it already in the post-attention norm of the sum, bf16 in the layer output
            list.Add(new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.ResidualScaleOff,
                expectedFirstBadModule: dtype == DType.Float32 ? "model.layers.0.post_attention_layernorm" : "model.layers.0"));
            // decode only (the prefill is bit-for-bit right): named at its (step, module) by the per-step module verdict
            list.Add(new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.DecodePositionOffByOne,
                expectedFirstBadModule: Runs.DecodeSteps.Name(1, "model.layers.0.self_attn")));
        }
        // eps 1e-6 for 2e-5 moves the tiny model's norms by ~1e-5 relative: 400x under one bf16 ulp, so fp32 only
        list.Add(new LlamaScenario(1, 1, false, InputKind.InputIds, fault: Faults.RmsNormEpsDefault,
            expectedFirstBadModule: "model.layers.0.input_layernorm"));

        // The rope_scaling variants HF's Llama supports, under TP with SP and PP.
        foreach (var rope in new[] { "rope-linear", "rope-llama3" })
            list.Add(new LlamaScenario(2, 2, true, InputKind.InputIds, variant: rope));
        list.Add(new LlamaScenario(2, 2, true, InputKind.InputIds, variant: "rope-llama3", fault: Faults.RopeScalingIgnored,
            expectedFirstBadModule: "model.layers.0.self_attn"));

        // Attention and MLP biases, tanh GELU, untied lm_head (attention_bias / mlp_bias / hidden_act observable).
        list.Add(new LlamaScenario(1, 1, false, InputKind.InputIds, variant: "bias"));
        list.Add(new LlamaScenario(2, 1, false, InputKind.InputIds, variant: "bias"));

        // Scenario 5 and Gemma4's text decoder (its experts' tanh GELU among the faults).
        list.AddRange(Gemma4Scenarios.All());

        // Gemma4's audio and vision towers; the matmul-no-nd-broadcast bug where it lives (the audio attention's 4D x 3D product).
        list.AddRange(Gemma4TowerScenario.All());

        // Qwen2-VL (M-RoPE decoder, vision tower, merger) at TP=1, 2, 4, and scenario 3's bug.
        list.AddRange(Qwen2VlScenarios.All());

        var duplicate = list.GroupBy(s => s.Id).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidOperationException($"scenario id {duplicate.Key} appears twice in the catalog");
        return list;
    }

    /// <summary>
    /// Scenarios whose id matches a filter: empty = all; otherwise every comma-separated term must match, a term
    /// being a substring of the id or a glob with '*'. A leading '!' negates a term.
    /// </summary>
    public static IReadOnlyList<Scenario> Filter(string? filter)
    {
        if (string.IsNullOrWhiteSpace(filter)) return All;
        var terms = filter.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return All.Where(s => terms.All(t => t.StartsWith('!') ? !Matches(s.Id, t[1..]) : Matches(s.Id, t))).ToList();
    }

    public static Scenario? Find(string id) => All.FirstOrDefault(s => s.Id == id);

    /// <summary>The ids closest to a wrong id or filter (edit distance), for "did you mean".</summary>
    public static IReadOnlyList<string> NearMatches(string text, int count = 5) =>
        All.Select(s => (s.Id, Distance: Engine.IO.NearNames.Distance(text, s.Id) - (s.Id.Contains(text.Split('/')[0], StringComparison.Ordinal) ? 5 : 0)))
            .OrderBy(x => x.Distance).ThenBy(x => x.Id).Take(count).Select(x => x.Id).ToList();

    private static bool Matches(string id, string term)
    {
        if (!term.Contains('*')) return id.Contains(term, StringComparison.Ordinal);
        var pattern = "^" + System.Text.RegularExpressions.Regex.Escape(term).Replace("\\*", ".*") + "$";
        return System.Text.RegularExpressions.Regex.IsMatch(id, pattern);
    }
}
