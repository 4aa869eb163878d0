using Harness.Engine.Distributed;
using Harness.Engine.Models.Llama;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Common;

/// <summary>
/// The gated MLP of the Llama-like decoders (LlamaMLP, Qwen2MLP) under tensor parallelism: gate_proj and up_proj as one <see cref="MergedColumnParallelLinear"/>
/// ([tokens, hidden] -> [tokens, 2 * intermediate/tp]), act(gate) * up, and down_proj as a
/// <see cref="RowParallelLinear"/> ([tokens, intermediate/tp] -> [tokens, hidden], all-reduced or partial under SP).
/// </summary>
public sealed class ParallelGatedMlp
{
    private readonly MergedColumnParallelLinear _gateUp;
    private readonly RowParallelLinear _down;
    private readonly ActivationKind _act;

    /// <param name="bias">Whether gate/up/down have biases (Llama's mlp_bias; Qwen2: none).</param>
    /// <param name="hiddenAct">The config's hidden_act.</param>
    public ParallelGatedMlp(IWeightSource weights, string prefix, ParallelContext ctx, bool bias, string hiddenAct)
    {
        _gateUp = MergedColumnParallelLinear.Load(weights, [prefix + ".gate_proj", prefix + ".up_proj"], ctx.Tp, bias: bias);
        _down = RowParallelLinear.Load(weights, prefix + ".down_proj", ctx.Tp, inputIsParallel: true, reduceResults: !ctx.SequenceParallel,
            bias: bias);
        _act = Activation.Parse(hiddenAct);
    }

    /// <param name="workspace">Host buffer for the activation output (null: a fresh tensor).</param>
    public Tensor Forward(Tensor x, DecoderWorkspace? workspace = null)
    {
        long t0 = LlamaProfile.Now();
        var gateUp = _gateUp.Forward(x, x.IsCuda || x.Rank != 2 ? null
            : workspace?.Linear(DecoderWorkspace.GateUp, x.DType, x.Shape[0], _gateUp.LocalOutFeatures)); // [tokens, 2 * intermediate/tp]
        LlamaProfile.Add("mlp.gate_up_proj", t0);
        t0 = LlamaProfile.Now();
        Tensor h;
        if (workspace is not null && !gateUp.IsCuda && gateUp.Rank == 2 && gateUp.DType is DType.Float32 or DType.BFloat16)
        {   // act(gate) * up in one pass, into the workspace (Activation.ApplyGatedInto: the same roundings as ApplyGated)
            int d = gateUp.Shape[1] / 2;
            h = workspace.Get(DecoderWorkspace.Act, gateUp.DType, gateUp.Shape[0], d);
            Activation.ApplyGatedInto(gateUp.Narrow(-1, 0, d), gateUp.Narrow(-1, d, d), _act, h);
        }
        else h = Activation.ApplyGated(gateUp, _act);     // [tokens, intermediate/tp]
        LlamaProfile.Add("mlp.act_and_mul", t0);
        t0 = LlamaProfile.Now();
        var y = _down.Forward(h, h.IsCuda || h.Rank != 2 ? null
            : workspace?.Linear(DecoderWorkspace.Down, h.DType, h.Shape[0], _down.OutFeatures)); // [tokens, hidden]
        LlamaProfile.Add("mlp.down_proj", t0);
        return y;
    }
}
