using System.Text.Json.Nodes;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// torch's CPU topk orders equal values by libstdc++'s nth_element / partial_sort, not by index: Gemma4's router takes the
/// top-2 of bf16 probabilities, where exact ties are common, and HF then routes to the expert torch's order picks.
/// <see cref="TopKTorchOrder"/> must pick the same indices as torch on tie-heavy rows, on both of torch's paths
/// (nth_element + sort when k * 64 &gt; n, partial_sort otherwise).
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
public class TopKTorchOrderTests
{
    [SkippableTheory]
    [InlineData(4, 2)]
    [InlineData(4, 1)]
    [InlineData(8, 3)]
    [InlineData(17, 5)]
    [InlineData(40, 20)]
    [InlineData(200, 3)]
    [InlineData(700, 9)]
    public void Ties_come_out_in_torchs_order(int n, int k)
    {
        var client = LiveReference.Client();
        const int rows = 64;
        var rng = new SplitMix64((ulong)(n * 1000 + k));
        var data = new float[rows * n];
        for (int i = 0; i < data.Length; i++) data[i] = rng.NextInt(4) * 0.125f;   // values in {0, .125, .25, .375}: ties everywhere
        data[5] = float.NaN;
        var x = Tensor.FromArray(data, rows, n).To(DType.BFloat16);
        var reply = client.Invoke("gemma4_topk", new JsonObject { ["k"] = k }, ("x", x));
        var (values, indices) = TopKTorchOrder.Forward(x, k);
        Assert.Equal(reply.Need("indices").ToInt64Array(), indices.ToInt64Array());
        Assert.True(values.BitwiseEquals(reply.Need("values")));
    }
}
