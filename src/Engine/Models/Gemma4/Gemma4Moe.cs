using Harness.Engine.Distributed;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Engine.Models.Gemma4;

/// <summary>
/// Gemma4TextRouter, replicated on every rank (vLLM keeps the router replicated so that every rank routes alike):
/// <code>
///   x = norm(r) * scale * hidden^-0.5            norm: RMSNorm without scale
///   p = softmax(proj(x))                          over the E experts
///   w, idx = topk(p, top_k); w /= w.sum(-1); w *= per_expert_scale[idx]
/// </code>
/// </summary>
public sealed class Gemma4Router
{
    private readonly Tensor _scale, _perExpertScale;
    private readonly Linear _proj;
    private readonly double _eps, _rootSize;
    private readonly int _topK;

    public Gemma4Router(IWeightSource weights, string prefix, Gemma4TextConfig config)
    {
        _scale = weights.Get(prefix + ".scale");
        _perExpertScale = weights.Get(prefix + ".per_expert_scale");
        _proj = new Linear(weights.Get(prefix + ".proj.weight"));
        _eps = config.RmsNormEps;
        _rootSize = Math.Pow(config.HiddenSize, -0.5);
        _topK = config.TopKExperts;
    }

    /// <summary>r [rows, hidden] -> probabilities [rows, E], weights [rows, k] (model dtype), indices [rows, k] (int64).</summary>
    public (Tensor Probabilities, Tensor Weights, Tensor Indices) Forward(Tensor r)
    {
        var x = Norms.RmsNorm(r, null, _eps, RmsNormKind.GemmaNoScale);
        x = Elementwise.Mul(Elementwise.Mul(x, _scale), _rootSize);                 // hidden_states * self.scale * self.scalar_root_size
        var probs = Softmax.Forward(_proj.Forward(x), -1);                          // [rows, E]
        var (w, idx) = TopKTorchOrder.Forward(probs, _topK);                        // [rows, k], ties in torch's order
        w = Elementwise.Div(w, Reductions.Sum(w, -1, keepDim: true));              // top_k_weights /= sum
        // the ids stay where topk wrote them (a graph step reads nothing back): index_select without the host's check
        var scale = IndexedExperts.Take(_perExpertScale, idx.Reshape(-1)).Reshape(idx.ShapeArray);
        return (probs, Elementwise.Mul(w, scale), idx);                             // * per_expert_scale[top_k_index]
    }
}

/// <summary>
/// Gemma4TextExperts with the weights fused as HF stores them: gate_up_proj [E, 2I, D] (gate rows [0, I), up rows
/// [I, 2I)) and down_proj [E, D, I]. Under tensor parallelism each rank holds every expert's intermediate slice
/// [r*I/tp, (r+1)*I/tp) (of the gate half, of the up half and of down_proj's columns), as vLLM's FusedMoE shards them:
/// <code>
///   gate_up_proj[e] = | gate_0 |  rank 0      down_proj[e] = [ d_0 | d_1 | ... ]   (columns per rank)
///                     | gate_1 |  rank 1
///                     |  up_0  |  rank 0
///                     |  up_1  |  rank 1
/// </code>
/// Per token: <c>sum_k w_k * down_e(act(gate_e x) * up_e x)</c>, experts visited in index order and added into a zero
/// tensor of the model dtype (HF's index_add_); each rank's sum is partial over I and all-reduced after down_proj
/// (FusedMoE's reduce_results). The activation comes from the config's hidden_activation through
/// <see cref="MoeActivations.Parse"/>, unless <see cref="Gemma4Options.ExpertsActivation"/> overrides it (Gemma4's
/// checkpoints say gelu_pytorch_tanh: the tanh GELU, on both paths).
/// <para>Two paths, the same arithmetic: the per-expert loop (<see cref="ForwardLoop"/>, HF's, reading the expert ids
/// back) and, for one token on a device that routes there (<see cref="IndexedExperts.RoutesOnDevice"/>: a GPU), the
/// indexed block (<see cref="ForwardIndexed"/>) whose shapes never change and whose expert ids stay on the device, so a
/// CUDA graph captures the decode step. The host keeps the loop (the reference); the CPU tests hold the indexed block
/// equal to it bit for bit.</para>
/// </summary>
public sealed class Gemma4Experts
{
    private readonly Linear[] _gate, _up, _down;
    private readonly Tensor _gateStack, _upStack, _downStack;
    private readonly IProcessGroup _tp;

    public MoeActivation Activation { get; }

    public Gemma4Experts(IWeightSource weights, string prefix, Gemma4TextConfig config, ParallelContext ctx, Gemma4Options options)
    {
        _tp = ctx.Tp;
        var gateUp = weights.Get(prefix + ".gate_up_proj");                         // [E, 2I, D]
        var down = weights.Get(prefix + ".down_proj");                              // [E, D, I]
        int e = config.NumExperts, inter = config.MoeIntermediateSize, d = config.HiddenSize;
        if (!Shape.SequenceEqual(gateUp.Shape, [e, 2 * inter, d]))
            throw new ArgumentException($"{prefix}.gate_up_proj is {Shape.Format(gateUp.Shape)}, expected [{e}, {2 * inter}, {d}] (num_experts, 2 * moe_intermediate_size, hidden_size)");
        if (!Shape.SequenceEqual(down.Shape, [e, d, inter]))
            throw new ArgumentException($"{prefix}.down_proj is {Shape.Format(down.Shape)}, expected [{e}, {d}, {inter}]");
        var (start, local) = Sharding.Range(inter, ctx.TpRank, ctx.TpSize, prefix + " moe_intermediate_size");
        int gateAt = options.ExpertsGateUpSwapped ? inter : 0, upAt = options.ExpertsGateUpSwapped ? 0 : inter;
        _gate = Enumerable.Range(0, e).Select(i => new Linear(gateUp.Select(0, i).Narrow(0, gateAt + start, local))).ToArray();
        _up = Enumerable.Range(0, e).Select(i => new Linear(gateUp.Select(0, i).Narrow(0, upAt + start, local))).ToArray();
        _down = Enumerable.Range(0, e).Select(i => new Linear(down.Select(0, i).Narrow(1, start, local))).ToArray();
        _gateStack = gateUp.Narrow(1, gateAt + start, local);                       // [E, I/tp, D]: every expert's _gate weight
        _upStack = gateUp.Narrow(1, upAt + start, local);                           // [E, I/tp, D]
        _downStack = down.Narrow(2, start, local);                                  // [E, D, I/tp]
        Activation = MoeActivations.Parse(options.ExpertsActivation ?? config.HiddenActivation);
        if (!Activation.IsGated())
            throw new ArgumentException($"{prefix}: Gemma4's experts are gated (gate_up_proj); activation '{Activation.Name()}' is not");
    }

    /// <summary>x [rows, hidden], routing weights [rows, k] and indices [rows, k] -> [rows, hidden] (all-reduced).</summary>
    public Tensor Forward(Tensor x, Tensor weights, Tensor indices)
    {
        var final = x.Shape[0] == 1 && IndexedExperts.RoutesOnDevice(x) ? ForwardIndexed(x, weights, indices) : ForwardLoop(x, weights, indices);
        return _tp.WorldSize == 1 ? final : _tp.AllReduce(final);
    }

    /// <summary>
    /// One token through its k experts from the expert ids where they live (no read-back, fixed shapes): x [1, hidden],
    /// weights [1, k], indices [1, k] int64 -> [1, hidden], this rank's partial sum (before the all-reduce). The same ops
    /// as <see cref="ForwardLoop"/> for one row, slot by slot, with the sum taken in ascending expert id.
    /// </summary>
    public Tensor ForwardIndexed(Tensor x, Tensor weights, Tensor indices)
    {
        if (x.Rank != 2 || x.Shape[0] != 1 || indices.Rank != 2 || indices.Shape[0] != 1 || !Shape.SequenceEqual(weights.Shape, indices.Shape))
            throw new ArgumentException($"the indexed experts take one token: x [1, hidden], weights and indices [1, k]; got {x}, {weights}, {indices}");
        int k = indices.Shape[1];
        var ids = indices.Reshape(-1);                                              // [k] int64 top_k_index, on x's device
        // gate, up = nn.functional.linear(current_state, self.gate_up_proj[expert_idx]).chunk(2, dim=-1)
        var gate = IndexedExperts.Gemv(x, _gateStack, ids);                         // [k, I/tp]
        var up = IndexedExperts.Gemv(x, _upStack, ids);                             // [k, I/tp]
        var h = Activation.Apply(gate, up);                                         // current_hidden_states = self.act_fn(gate) * up
        var y = IndexedExperts.Gemv(h, _downStack, ids);                            // nn.functional.linear(current_hidden_states, self.down_proj[expert_idx]): [k, hidden]
        y = Elementwise.Mul(y, weights.Reshape(k, 1));                              // * top_k_weights[token_idx, top_k_pos, None]
        return IndexedExperts.SumInIdOrder(y, ids);                                 // final_hidden_states.index_add_(0, token_idx, ...): [1, hidden]
    }

    /// <summary>HF's per-expert loop (the expert ids read back to the host): x [rows, hidden], weights and indices [rows, k]
    /// -> [rows, hidden], this rank's partial sum (before the all-reduce).</summary>
    public Tensor ForwardLoop(Tensor x, Tensor weights, Tensor indices)
    {
        int rows = x.Shape[0], k = indices.Shape[1];
        var idx = indices.ToInt64Array();
        var final = Tensor.ZerosLike(x, x.DType, x.ShapeArray);                            // torch.zeros_like(hidden_states)
        for (int e = 0; e < _gate.Length; e++)
        {
            var hits = new List<(int Row, int Slot)>();
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < k; j++)
                    if (idx[r * k + j] == e) hits.Add((r, j));
            if (hits.Count == 0) continue;
            var rowIds = Tensor.FromArray(hits.Select(h => (long)h.Row).ToArray(), hits.Count);
            var current = x.IndexSelect(0, rowIds);                                 // [n, hidden]
            var h = Activation.Apply(_gate[e].Forward(current), _up[e].Forward(current)); // act(gate) * up: [n, I/tp]
            var y = _down[e].Forward(h);                                            // [n, hidden], partial over I under TP
            var w = Tensor.ZerosLike(x, weights.DType, hits.Count, 1);
            for (int i = 0; i < hits.Count; i++) w.Narrow(0, i, 1).CopyFrom(weights.Narrow(0, hits[i].Row, 1).Narrow(1, hits[i].Slot, 1));
            y = Elementwise.Mul(y, w);                                              // * top_k_weights[token_idx, top_k_pos, None]
            for (int i = 0; i < hits.Count; i++)                                    // index_add_ (in the model dtype)
            {
                var dst = final.Narrow(0, hits[i].Row, 1);
                dst.CopyFrom(Elementwise.Add(dst, y.Narrow(0, i, 1)));
            }
        }
        return final;
    }
}
