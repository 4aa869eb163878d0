using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Runs;
using Harness.Scenarios;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// Issue 21: "Llama/Qwen2 RMSNorm float32 inside the twin". HF's <c>LlamaRMSNorm</c> (and <c>Qwen2RMSNorm</c>,
/// <c>Qwen2VLRMSNorm</c>, "equivalent to T5LayerNorm") starts with <c>hidden_states.to(torch.float32)</c> and ends with
/// <c>self.weight * hidden_states.to(input_dtype)</c>, so the float64 twin used to round every Llama and Qwen2-VL norm to
/// float32 (5.9e-8 relative off the float64 norm, measured on a [3, 64] float64 input): there the oracle shared the
/// reference's float32 rounding, as it did at the Gemma norms before (<c>PerLayerInputNormOracleTests</c>). The worker's
/// oracle now runs those norms in float64 too (<c>float64_t5_norm_forward</c> in harness_worker.py), and the recordings
/// show it: the oracle's input_layernorm output is the float64 RMSNorm of the oracle's own input (the embedding for
/// layer 0, layer 0's output for layer 1) to ~1e-16, and not HF's float32 one. Against the recordings made with the
/// float32-norm twin the first check fails at every
/// recording (layer 0's norm 5.1e-8, 5.3e-8 and 4.5e-8 off float64).
/// </summary>
public class T5RmsNormOracleTests
{
    public static TheoryData<string, string, string, string> Recordings => new()
    {
        { "llama-fp32-input-ids-7", "tiny-llama-fp32", "model", "model" },
        { "llama-bf16-input-ids-7", "tiny-llama-bf16", "model", "model" },
        { "qwen2-vl-fp32-text", "tiny-qwen2-vl-fp32", "model.language_model", "model" },
    };

    // LlamaRMSNorm: variance = x.pow(2).mean(-1, keepdim=True); x * torch.rsqrt(variance + eps); weight * x, each op
    // rounded to float32 when `single` (HF's forward on x.to(torch.float32)), else in float64.
    private static double[] Norm(double[] x, double[] weight, double eps, int width, bool single)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / width; r++)
        {
            if (single)
            {
                float ms = 0;
                for (int i = 0; i < width; i++) { float v = (float)x[r * width + i]; ms += v * v; }
                float scale = 1f / MathF.Sqrt(ms / width + (float)eps);
                for (int i = 0; i < width; i++) y[r * width + i] = weight[i] * (float)((float)x[r * width + i] * scale);
            }
            else
            {
                double ms = 0;
                for (int i = 0; i < width; i++) ms += x[r * width + i] * x[r * width + i];
                double scale = 1 / Math.Sqrt(ms / width + eps);
                for (int i = 0; i < width; i++) y[r * width + i] = weight[i] * (x[r * width + i] * scale);
            }
        }
        return y;
    }

    private static double RelL2(double[] a, double[] b) => Gemma4.PerLayerInputNormOracleTests.RelL2(a, b);

    [Theory]
    [MemberData(nameof(Recordings))]
    public void The_oracle_computes_the_llama_style_rms_norm_in_float64_not_in_HFs_float32(string key, string model, string captures, string weights)
    {
        var bundle = ReferenceBundle.Load(Fixtures.BundlePath(Fixtures.DefaultDirectory(), key));
        var dir = Path.Combine(Fixtures.DefaultDirectory(), "models", model);
        using var file = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var config = Engine.Config.HfConfig.Load(Path.Combine(dir, "config.json"));
        double eps = config.GetDoubleOrNull("text_config.rms_norm_eps") ?? config.GetDouble("rms_norm_eps");
        string o = LayerComparison.OraclePrefix;
        foreach (var (input, layer) in new[] { ($"{captures}.embed_tokens", 0), ($"{captures}.layers.0", 1) })
        {
            var x = bundle.Tensors[o + input].ToDoubleArray();                                      // [1, T, hidden]
            var y = bundle.Tensors[$"{o}{captures}.layers.{layer}.input_layernorm"];
            var w = file.ReadTensor($"{weights}.layers.{layer}.input_layernorm.weight").ToDoubleArray();
            int width = y.Shape[^1];
            double toFloat64 = RelL2(y.ToDoubleArray(), Norm(x, w, eps, width, single: false));
            double toFloat32 = RelL2(y.ToDoubleArray(), Norm(x, w, eps, width, single: true));
            Assert.True(toFloat64 < 1e-13, $"{key} layers.{layer}.input_layernorm: the recorded oracle is {toFloat64:E2} off the float64 norm of its own input");
            Assert.True(toFloat32 > 1e-9, $"{key} layers.{layer}.input_layernorm: the recorded oracle is only {toFloat32:E2} off HF's float32 norm: the twin rounds there");
        }
    }
}
