using Harness.Comparison;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Live;

/// <summary>The engine's RMSNorm variants against HF's own classes, in float32 and bfloat16.</summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public class LiveRmsNormTests(ITestOutputHelper output)
{
    public static TheoryData<string, RmsNormKind, bool, DType> Variants()
    {
        var data = new TheoryData<string, RmsNormKind, bool, DType>();
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
        {
            data.Add("LlamaRMSNorm", RmsNormKind.Llama, true, dtype);
            data.Add("Qwen2RMSNorm", RmsNormKind.Llama, true, dtype);
            data.Add("Gemma3RMSNorm", RmsNormKind.GemmaOnePlusWeight, true, dtype);
            data.Add("Gemma3nRMSNorm", RmsNormKind.GemmaScaled, true, dtype);
            data.Add("Gemma3nRMSNorm", RmsNormKind.GemmaNoScale, false, dtype);
            data.Add("Gemma4RMSNorm", RmsNormKind.GemmaScaled, true, dtype);
            data.Add("Gemma4RMSNorm", RmsNormKind.GemmaNoScale, false, dtype);
        }
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void RmsNorm_matches_the_HF_class(string cls, RmsNormKind kind, bool withScale, DType dtype)
    {
        var reference = LiveReference.Client();
        const int hidden = 96;
        var x = Tensor.Normal(dtype, 11, 0, 3, 5, 7, hidden);
        // the weight lives in the model's dtype, as in a loaded checkpoint
        var weight = withScale ? Tensor.Normal(dtype, 12, kind == RmsNormKind.GemmaOnePlusWeight ? 0 : 1, 0.5f, hidden) : null;
        const double eps = 1e-6;
        var expected = reference.RmsNorm(cls, x, weight, eps, withScale);
        var actual = Norms.RmsNorm(x, weight, eps, kind);
        var r = TensorComparer.Compare($"{cls} ({kind}) {dtype.TorchName()}", actual, expected, Tolerances.For(dtype));
        output.WriteLine(r.ToString());
        Assert.True(r.Passed, r.ToString());
    }

    [SkippableFact]
    public void The_wrong_variant_is_rejected()
    {
        // Gemma's (1 + weight) form computed as Llama's weight form: the check above must see it.
        var reference = LiveReference.Client();
        var x = Tensor.Normal(DType.Float32, 11, 0, 3, 5, 96);
        var weight = Tensor.Normal(DType.Float32, 12, 0, 0.5f, 96);
        var expected = reference.RmsNorm("Gemma3RMSNorm", x, weight, 1e-6);
        var r = TensorComparer.Compare("Gemma3RMSNorm computed as Llama", Norms.RmsNorm(x, weight, 1e-6, RmsNormKind.Llama), expected, Tolerances.Float32);
        Assert.False(r.Passed, r.ToString());
    }
}
