using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Engine.Layers;

/// <summary>
/// The gated MLP of Llama, Gemma and their MoE experts: down_proj(act(gate_proj(x)) * up_proj(x)).
/// Weights as HF names them (gate_proj, up_proj: [intermediate, hidden]; down_proj: [hidden, intermediate]).
/// Input [tokens, hidden] -> [tokens, intermediate] -> output [tokens, hidden]. Gemma4's experts use gelu_pytorch_tanh:
/// taking exact gelu there is scenario 5's bug.
/// </summary>
public sealed class GatedMlp(Linear gateProj, Linear upProj, Linear downProj, ActivationKind act)
{
    public Linear GateProj { get; } = gateProj;
    public Linear UpProj { get; } = upProj;
    public Linear DownProj { get; } = downProj;
    public ActivationKind Act { get; } = act;

    public static GatedMlp FromWeights(Tensor gate, Tensor up, Tensor down, string hiddenAct) =>
        new(new Linear(gate), new Linear(up), new Linear(down), Activation.Parse(hiddenAct));

    public Tensor Forward(Tensor x)
    {
        var gate = GateProj.Forward(x);                       // [tokens, intermediate]
        var up = UpProj.Forward(x);                           // [tokens, intermediate]
        return DownProj.Forward(Activation.ApplyGated(gate, up, Act)); // [tokens, hidden]
    }
}
