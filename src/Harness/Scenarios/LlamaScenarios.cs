using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Scenarios;

/// <summary>The llama entries of the catalog (<see cref="ModelFamilies"/>: the Llama family's scenarios).</summary>
public static class LlamaScenarios
{
    public static IEnumerable<Scenario> All()
    {
            // Scenario 4 and the core loop: Llama under every layout, from input ids and from prompt embeds.
            foreach (var input in new[] { InputKind.InputIds, InputKind.PromptEmbeds })
            {
                yield return new LlamaScenario(1, 1, false, input);
                yield return new LlamaScenario(2, 1, false, input);
                yield return new LlamaScenario(4, 1, false, input);
                yield return new LlamaScenario(2, 1, true, input);
                yield return new LlamaScenario(1, 2, false, input);
                yield return new LlamaScenario(2, 2, true, input);
                yield return new LlamaScenario(2, 1, true, input, fault: Faults.SpResidualFirstSlice,
                    expectedFirstBadModule: "model.layers.0.post_attention_layernorm");
                yield return new LlamaScenario(2, 2, true, input, fault: Faults.SpPpResidualSliced, expectedFirstBadModule: "model.layers.2");
            }
            yield return new LlamaScenario(4, 1, true, InputKind.InputIds, promptTokens: 5); // 5 tokens padded to 8 over 4 ranks

            // bfloat16: every intermediate rounded to bf16, judged by the bf16 layer policy.
            yield return new LlamaScenario(1, 1, false, InputKind.InputIds, DType.BFloat16);
            yield return new LlamaScenario(2, 2, true, InputKind.InputIds, DType.BFloat16);
            yield return new LlamaScenario(2, 2, true, InputKind.InputIds, DType.BFloat16, fault: Faults.SpResidualFirstSlice,
                expectedFirstBadModule: "model.layers.0.post_attention_layernorm");

            // Bugs the per-dtype oracle bound must catch at the module where they act, in bf16 as in fp32 (issue 21): a precision-only
            // one (the norm's sum of squares in bf16), a config field not read (rope_theta, rms_norm_eps), a residual branch scale.
            foreach (var dtype in new[] { DType.BFloat16, DType.Float32 })
            {
                yield return new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.RmsNormSumOfSquaresBf16,
                    expectedFirstBadModule: "model.layers.0.input_layernorm");
                yield return new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.RopeThetaDefault,
                    expectedFirstBadModule: "model.layers.0.self_attn");
                // the residual add is model.layers.0's own: fp32 sees it already in the post-attention norm of the sum, bf16 in the layer output
                yield return new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.ResidualScaleOff,
                    expectedFirstBadModule: dtype == DType.Float32 ? "model.layers.0.post_attention_layernorm" : "model.layers.0");
                // decode only (the prefill is bit-for-bit right): named at its (step, module) by the per-step module verdict
                yield return new LlamaScenario(1, 1, false, InputKind.InputIds, dtype, fault: Faults.DecodePositionOffByOne,
                    expectedFirstBadModule: Runs.DecodeSteps.Name(1, "model.layers.0.self_attn"));
            }
            // eps 1e-6 for 2e-5 moves the tiny model's norms by ~1e-5 relative: 400x under one bf16 ulp, so fp32 only
            yield return new LlamaScenario(1, 1, false, InputKind.InputIds, fault: Faults.RmsNormEpsDefault,
                expectedFirstBadModule: "model.layers.0.input_layernorm");

            // The rope_scaling variants HF's Llama supports, under TP with SP and PP.
            foreach (var rope in new[] { "rope-linear", "rope-llama3" })
                yield return new LlamaScenario(2, 2, true, InputKind.InputIds, variant: rope);
            yield return new LlamaScenario(2, 2, true, InputKind.InputIds, variant: "rope-llama3", fault: Faults.RopeScalingIgnored,
                expectedFirstBadModule: "model.layers.0.self_attn");

            // Attention and MLP biases, tanh GELU, untied lm_head (attention_bias / mlp_bias / hidden_act observable).
            yield return new LlamaScenario(1, 1, false, InputKind.InputIds, variant: "bias");
            yield return new LlamaScenario(2, 1, false, InputKind.InputIds, variant: "bias");
    }
}
