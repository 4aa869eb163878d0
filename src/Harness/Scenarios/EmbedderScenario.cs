using System.Diagnostics.CodeAnalysis;
using Harness.Comparison;
using Harness.Engine.Capture;
using Harness.Engine.Distributed;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Scenarios;

/// <summary>
/// Scenario 2: Gemma3n's multimodal embedder projection under TP=2. It projects a FULL-WIDTH input, so its
/// RowParallelLinear needs input_is_parallel=False. The reference is torch's x @ W^T; each engine rank's output is
/// compared with it. With the fault row-parallel-input-is-parallel the ranks die with
/// "mat1 and mat2 shapes cannot be multiplied" at model.embed_vision.embedding_projection.
/// </summary>
public sealed record EmbedderScenario : TensorScenario
{
    public const string Module = "model.embed_vision.embedding_projection";
    private const int Tokens = 64, Width = 256, Out = 128;

    public int Tp { get; }

    [SetsRequiredMembers]
    public EmbedderScenario(int tp, DType dtype, string? fault = null)
    {
        Tp = tp;
        Id = $"gemma3n-embedder/tp{tp}/{DTypeTag(dtype)}{(fault is null ? "" : $"/fault={fault}")}";
        Model = "gemma3n-embedder";
        Layout = $"tp{tp}";
        DType = dtype;
        Input = "tensors";
        Fault = fault;
        ExpectedFirstBadModule = fault is null ? null : Module;
        Tolerance = Policy.Name;
        ReferenceKey = $"gemma3n-embedder-{DTypeTag(dtype)}";
        Description = $"Gemma3n multimodal embedder projection (row-parallel, full-width input) at TP={tp}, {dtype.TorchName()}" +
                      (fault is null ? "" : $"; injected fault {fault}");
    }

    public override IReadOnlyList<string> Modules => [Module];

    public override TolerancePolicy Policy => Tolerances.GemmFor(DType);

    private Tensor X => Tensor.Normal(DType, 51, 0, 1, Tokens, Width);
    private Tensor W => Tensor.Normal(DType, 52, 0, 1 / MathF.Sqrt(Width), Out, Width);

    protected override IReadOnlyDictionary<string, Tensor> SeededInputs() => new Dictionary<string, Tensor> { ["x"] = X, ["weight"] = W };

    protected override IReadOnlyDictionary<string, Tensor> Reference(ReferenceClient client) =>
        new Dictionary<string, Tensor> { [Module] = client.Matmul(X, W.T().Contiguous()) };

    protected override void Engine(IActivationSink sink)
    {
        var x = X;
        var w = W;
        ThreadWorld.Run(Tp, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, Tp, 1);
            try
            {
                var projection = new RowParallelLinear(w, null, ctx.Tp, inputIsParallel: false, reduceResults: true, Module);
                sink.Record(Module, rank, projection.Forward(x), ShardSpec.Whole);
            }
            catch (Exception e) when (e is not CollectiveException { Failure: CollectiveFailure.PeerFailed })
            {
                throw new ModuleFailedException(Module, rank, e);
            }
        }, TimeSpan.FromSeconds(60));
    }
}
