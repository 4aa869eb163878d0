using Harness.Engine.Distributed;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// Gemma4TextMLP under tensor parallelism: <c>down_proj(act_fn(gate_proj(x)) * up_proj(x))</c> with act_fn =
/// ACT2FN[hidden_activation]; gate_proj and up_proj as one <see cref="MergedColumnParallelLinear"/>
/// ([rows, hidden] -> [rows, 2 * intermediate/tp]), down_proj a <see cref="RowParallelLinear"/> (all-reduced).
/// KV-shared layers are twice as wide with use_double_wide_mlp (the weights say so).
/// </summary>
public sealed class Gemma4Mlp
{
    private readonly MergedColumnParallelLinear _gateUp;
    private readonly RowParallelLinear _down;
    private readonly ActivationKind _act;

    public Gemma4Mlp(IWeightSource weights, string prefix, Gemma4TextConfig config, ParallelContext ctx)
    {
        _gateUp = MergedColumnParallelLinear.Load(weights, [prefix + ".gate_proj", prefix + ".up_proj"], ctx.Tp);
        _down = RowParallelLinear.Load(weights, prefix + ".down_proj", ctx.Tp, inputIsParallel: true, reduceResults: true);
        _act = Activation.Parse(config.HiddenActivation);
    }

    public Tensor Forward(Tensor x)
    {
        var gateUp = _gateUp.Forward(x);                  // [rows, 2 * intermediate/tp]
        var h = Activation.ApplyGated(gateUp, _act);      // [rows, intermediate/tp]
        return _down.Forward(h);                          // [rows, hidden]
    }
}
