using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>
/// Gemma3n's multimodal embedder under TP=2: its RowParallelLinear projects a FULL-WIDTH input [tokens, 2048], so it
/// must be built with input_is_parallel=False (each rank slices its half). Built with input_is_parallel=True, rank 0
/// multiplies [1024, 2048] by its [1024, 2048] shard and dies: "mat1 and mat2 shapes cannot be multiplied
/// (1024x2048 and 1024x2048)".
/// </summary>
[Collection(SerialCollection.Name)]
public class RowParallelFullWidthInputTests
{
    private const int Tokens = 1024, Width = 2048;

    private static Tensor[] RunTp2(Tensor x, Tensor weight, bool inputIsParallel = false) =>
        ThreadWorld.Run(2, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, 2, 1);
            var embedder = new RowParallelLinear(weight, null, ctx.Tp, inputIsParallel, reduceResults: true, "embedding_projection");
            try
            {
                return embedder.Forward(x);
            }
            catch (Exception e)
            {
                throw new ModuleFailedException("model.embed_vision.embedding_projection", rank, e);
            }
        }, TimeSpan.FromSeconds(30));

    [Fact]
    public void Full_width_input_with_input_is_parallel_fails_with_both_shapes()
    {
        var x = Tensor.Normal(DType.Float32, 1, 0, 1, Tokens, Width);
        var w = Tensor.Normal(DType.Float32, 2, 0, 0.02f, Width, Width);
        var ex = Assert.ThrowsAny<Exception>(() => RunTp2(x, w, inputIsParallel: true));   // the bug: built for a sharded input
        Assert.Contains("model.embed_vision.embedding_projection", ex.ToString());
        Assert.Contains("mat1 and mat2 shapes cannot be multiplied (1024x2048 and 1024x2048)", ex.ToString());
    }

    [Fact]
    public void Full_width_input_with_input_is_parallel_false_matches_the_unsharded_projection()
    {
        var x = Tensor.Normal(DType.Float32, 1, 0, 1, 64, 256);
        var w = Tensor.Normal(DType.Float32, 2, 0, 0.1f, 128, 256);
        var outputs = RunTp2(x, w);
        var expected = new Linear(w).Forward(x);
        foreach (var (y, rank) in outputs.Select((y, r) => (y, r)))
        {
            var r = TensorComparer.Compare($"embedding_projection rank {rank}", y, expected, Tolerances.Float32Gemm);
            Assert.True(r.Passed, r.ToString());
        }
    }
}
