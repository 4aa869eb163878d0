using Harness.Comparison;
using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Live;

/// <summary>The engine's matmul against torch.matmul on the shapes of the engine-core issue, float32 and bfloat16.</summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public class LiveMatmulTests(ITestOutputHelper output)
{
    public static TheoryData<string, string, DType> Cases()
    {
        string[][] pairs =
        [
            ["32,64", "64,16"], ["64,16", "4,16,32"], ["4,32,64", "64,16"], ["1,4,32,64", "64,16"],
            ["1,2,32,64", "2,64,16"], ["32,64", "1,2,2,64,16"], ["1,2,2,32,64", "64,16"], ["1,2,4,32,64", "1,2,4,64,16"],
            ["129", "129"], ["13", "13,7"], ["7,13", "13"], ["3,7,13", "13"], ["13", "2,13,7"], ["2,1,7,129", "5,129,13"],
        ];
        var data = new TheoryData<string, string, DType>();
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })
            foreach (var p in pairs) data.Add(p[0], p[1], dtype);
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Engine_matmul_matches_torch_matmul(string shapeA, string shapeB, DType dtype)
    {
        var reference = LiveReference.Client();
        var a = Tensor.Randn(dtype, 5, Parse(shapeA));
        var b = Tensor.Randn(dtype, 6, Parse(shapeB));
        var expected = reference.Matmul(a, b);
        foreach (bool invariant in new[] { false, true })
        {
            using var mode = ComputeSettings.UseBatchInvariant(invariant);
            var r = TensorComparer.Compare($"matmul {shapeA} x {shapeB} {dtype.TorchName()} (batch-invariant {invariant})",
                Matmul.Forward(a, b), expected, Tolerances.GemmFor(dtype));
            output.WriteLine(r.ToString());
            Assert.True(r.Passed, r.ToString());
        }
    }

    private static int[] Parse(string s) => s.Split(',').Select(int.Parse).ToArray();
}
