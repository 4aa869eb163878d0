using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Runs;
using Harness.Scenarios;
using Harness.Tests.Correctness.Scenarios;

namespace Harness.Tests.Correctness.Gemma4;

/// <summary>
/// Issue 21's 7.7x outlier (fp32 Gemma4 <c>post_per_layer_input_norm</c> under TP=2), pinned. HF's Gemma RMSNorm computes
/// <c>self._norm(hidden_states.float())</c>, so the float64 twin used to compute every Gemma norm in float32: the oracle
/// shared the reference's rounding there, and the reference's "own error" at the norm was a float32-vs-float32 sample.
/// The worker's oracle now keeps those norms in float64 (<c>float64_norms</c>); the recording shows it: the oracle's norm
/// output is the float64 RMSNorm of the oracle's own input to ~1e-15, not the float32 one (~6e-8 away), and against it
/// the engine's error ratio at those modules under TP=2 is an ordinary one (it was 7.7 against the float32-norm twin).
/// </summary>
public class PerLayerInputNormOracleTests
{
    public static TheoryData<string, string, string> Recordings => new()
    {
        { "gemma4-e2b-like-fp32-text", "tiny-gemma4-e2b-like-fp32", "model.layers.3" },
        { "gemma4-e2b-like-mm-fp32-image", "tiny-gemma4-e2b-like-mm-fp32", "model.language_model.layers.3" },   // the 7.7x row
    };

    private static (double[] Input, double[] Output, float[] Weight, double Eps, int Rows, int Width) Recorded(string key, string model, string layer)
    {
        var bundle = ReferenceBundle.Load(Fixtures.BundlePath(Fixtures.DefaultDirectory(), key));
        var input = bundle.Tensors[$"{LayerComparison.OraclePrefix}{layer}.per_layer_projection"];     // [1, T, hidden]
        var output = bundle.Tensors[$"{LayerComparison.OraclePrefix}{layer}.post_per_layer_input_norm"];
        var models = Path.Combine(Fixtures.DefaultDirectory(), "models", model);
        using var weights = SafetensorsFile.Open(Path.Combine(models, "model.safetensors"));
        var weight = weights.ReadTensor($"{layer}.post_per_layer_input_norm.weight").To(DType.Float32).ToFloatArray();
        var config = Engine.Config.HfConfig.Load(Path.Combine(models, "config.json"));
        double eps = config.GetDoubleOrNull("text_config.rms_norm_eps") ?? config.GetDouble("rms_norm_eps");
        int width = input.Shape[^1];
        return (input.ToDoubleArray(), output.ToDoubleArray(), weight, eps, input.NumEl / width, width);
    }

    // Gemma4RMSNorm: mean_squared = x.pow(2).mean(-1, keepdim=True) + eps; x * torch.pow(mean_squared, -0.5) * weight,
    // each op rounded to float32 when `single` (HF's forward on x.float()), else in float64.
    private static double[] Norm(double[] x, float[] weight, double eps, int rows, int width, bool single)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            if (single)
            {
                float ms = 0;
                for (int i = 0; i < width; i++) { float v = (float)x[r * width + i]; ms += v * v; }
                float scale = MathF.Pow(ms / width + (float)eps, -0.5f);
                for (int i = 0; i < width; i++) y[r * width + i] = (float)x[r * width + i] * scale * weight[i];
            }
            else
            {
                double ms = 0;
                for (int i = 0; i < width; i++) ms += x[r * width + i] * x[r * width + i];
                double scale = Math.Pow(ms / width + eps, -0.5);
                for (int i = 0; i < width; i++) y[r * width + i] = x[r * width + i] * scale * weight[i];
            }
        }
        return y;
    }

    /// <summary>||a - b|| / ||b||: the oracle tests' one relative L2 (T5RmsNormOracleTests uses it too).</summary>
    internal static double RelL2(double[] a, double[] b)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i]; }
        return Math.Sqrt(num / den);
    }

    [Theory]
    [MemberData(nameof(Recordings))]
    public void The_oracle_computes_the_per_layer_input_norm_in_float64_not_in_HFs_float32(string key, string model, string layer)
    {
        var (x, y, w, eps, rows, width) = Recorded(key, model, layer);
        double toFloat64 = RelL2(y, Norm(x, w, eps, rows, width, single: false));
        double toFloat32 = RelL2(y, Norm(x, w, eps, rows, width, single: true));
        Assert.True(toFloat64 < 1e-13, $"the recorded oracle is {toFloat64:E2} off the float64 norm of its own input");
        Assert.True(toFloat32 > 1e-9, $"the recorded oracle is only {toFloat32:E2} off HF's float32 norm: the twin rounds there");
    }

    [Theory]
    [InlineData("gemma4/e2b-like/tp2/image/fp32")]                                  // the 7.7x (6.2 with today's engine)
    [InlineData("gemma4/e2b-like/tp2/text/fp32")]
    public void Against_the_float64_norm_the_engines_ratio_at_the_per_layer_input_norms_under_TP2_is_no_outlier(string id)
    {
        // Against the recordings made with the float32-norm twin this fails: 6.2 (image) and 3.1 (text) with today's engine.
        var result = ScenarioRunner.Run(ScenarioCatalog.Find(id)!, CatalogContexts.Recorded).Result;
        Assert.True(result.Passed, result.Describe());
        var rows = result.Layers.Rows.Where(r => r.Module.EndsWith("post_per_layer_input_norm", StringComparison.Ordinal) && r.Result?.Oracle is not null).ToList();
        Assert.Equal(4 * 2, rows.Count);                                                 // 4 layers x 2 ranks
        foreach (var r in rows)
            Assert.True(r.Result!.Oracle!.ErrorRatio <= 2.5,
                $"{r.Label}: engine/reference error ratio {r.Result.Oracle.ErrorRatio:G3} against float64 (recorded: at most 1.94)");
    }
}
