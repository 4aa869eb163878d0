using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Llama;

/// <summary>
/// LlamaMLP under tensor parallelism: gate_proj and up_proj as one <see cref="MergedColumnParallelLinear"/>
/// ([tokens, hidden] -> [tokens, 2 * intermediate/tp]), act(gate) * up, and down_proj as a
/// <see cref="RowParallelLinear"/> ([tokens, intermediate/tp] -> [tokens, hidden], all-reduced or partial under SP).
/// </summary>
public sealed class LlamaMlp
{
    private readonly MergedColumnParallelLinear _gateUp;
    private readonly RowParallelLinear _down;
    private readonly ActivationKind _act;

    public LlamaMlp(IWeightSource weights, string prefix, Config.TextConfig config, ParallelContext ctx)
    {
        _gateUp = MergedColumnParallelLinear.Load(weights, [prefix + ".gate_proj", prefix + ".up_proj"], ctx.Tp, bias: config.MlpBias);
        _down = RowParallelLinear.Load(weights, prefix + ".down_proj", ctx.Tp, inputIsParallel: true, reduceResults: !ctx.SequenceParallel,
            bias: config.MlpBias);
        _act = Activation.Parse(config.HiddenAct ?? "silu");
    }

    public Tensor Forward(Tensor x)
    {
        var gateUp = _gateUp.Forward(x);                  // [tokens, 2 * intermediate/tp]
        var h = Activation.ApplyGated(gateUp, _act);      // [tokens, intermediate/tp]
        return _down.Forward(h);                          // [tokens, hidden]
    }
}
