using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Tensors;
using Tensor = Harness.Engine.Tensors.Tensor;

namespace Harness.Engine.Ops;

/// <summary>
/// The ops of a mixture-of-experts block that take the expert ids as a tensor, so that on a device the ids never come
/// back to the host (a CUDA graph step: <c>Gemma4Experts.ForwardIndexed</c>). For one token and k selected experts,
/// HF's per-expert loop (Gemma4TextExperts.forward)
/// <code>
///   for expert_idx in expert_hit:                       # ascending expert index
///       gate, up = nn.functional.linear(current_state, self.gate_up_proj[expert_idx]).chunk(2, dim=-1)
///       current_hidden_states = self.act_fn(gate) * up
///       current_hidden_states = nn.functional.linear(current_hidden_states, self.down_proj[expert_idx])
///       current_hidden_states = current_hidden_states * top_k_weights[token_idx, top_k_pos, None]
///       final_hidden_states.index_add_(0, token_idx, current_hidden_states.to(final_hidden_states.dtype))
/// </code>
/// becomes fixed-shape ops over the k slots: <see cref="Gemv"/> (the linears of the selected experts, the expert id read
/// from the ids tensor), the activation and the weighting as the ordinary element-wise ops, and <see cref="SumInIdOrder"/>
/// (index_add_ into zeros, one expert after the other in ascending id, each add rounded to the dtype).
/// <para>Each op's host part (<c>HostOps</c>, below) is the naive version, the same engine ops the per-expert loop runs:
/// the CPU tests hold the indexed block equal to the eager loop bit for bit. A device runs its own kernels
/// (<c>CudaGemm.ExpertGemv</c>, <c>CudaOps.SumInIdOrder</c>, <c>CudaOps.IndexSelectAt</c>).</para>
/// </summary>
public static class IndexedExperts
{
    /// <summary>Whether x's device runs a one-token MoE block from device-held expert ids (these ops) rather than the
    /// per-expert loop, which reads the ids back: a GPU does (its graph steps need it) outside batch-invariant mode; the
    /// host keeps the loop, the reference.</summary>
    public static bool RoutesOnDevice(Tensor x) => OpBackend.Of(x).RoutesExpertsOnDevice;

    /// <summary>
    /// table.index_select(0, ids) with ids that are in range by construction (a top-k's indices), read where they live:
    /// table [E, ...], ids int64 [n] -> [n, ...] (bits copied). On a device no id is checked or read back; on the host
    /// <see cref="Tensor.IndexSelect(int, Tensor)"/> checks them.
    /// </summary>
    public static Tensor Take(Tensor table, Tensor ids)
    {
        if (table.Rank < 1 || ids.Rank != 1 || ids.DType != DType.Int64)
            throw new ArgumentException($"take: a table [E, ...] and int64 ids [n], got {table} and {ids}");
        return OpBackend.Of(table, ids).TakeRows(table, ids);
    }

    /// <summary>
    /// The indexed expert GEMV. Shape contract: x [rows, K] with rows = 1 (the same input for every slot) or rows = slots;
    /// stacked [E, N, K] (HF's gate_up_proj / down_proj layout, or a view of rows or columns of it: a gate half, a TP
    /// slice); ids int64 [slots] on x's device, each in [0, E). Result [slots, N] contiguous in x's dtype:
    /// <code>  y[s, n] = round(sum_k float(x[rows == 1 ? 0 : s, k]) * float(stacked[ids[s], n, k]))  </code>
    /// (float32 accumulation, one rounding: nn.functional.linear(x_s, stacked[ids[s]]) per slot).
    /// </summary>
    public static Tensor Gemv(Tensor x, Tensor stacked, Tensor ids)
    {
        OpSupport.RequireFloat(x, "expert_gemv");
        if (x.Rank != 2 || stacked.Rank != 3 || ids.Rank != 1 || ids.DType != DType.Int64)
            throw new ArgumentException($"expert_gemv: x [rows, K], stacked weights [E, N, K] and int64 ids [slots], got {x}, {stacked} and {ids}");
        int slots = ids.Size(0), rows = x.Size(0);
        if (x.Size(1) != stacked.Size(2))
            throw new ArgumentException($"expert_gemv: x {Shape.Format(x.Shape)} and stacked weights {Shape.Format(stacked.Shape)} differ in K");
        if (rows != 1 && rows != slots)
            throw new ArgumentException($"expert_gemv: x has {rows} rows for {slots} slots (1 row for every slot, or one per slot)");
        if (x.DType != stacked.DType)
            throw new ArgumentException($"expert_gemv: x is {x.DType.TorchName()}, the weights {stacked.DType.TorchName()}");
        return OpBackend.Of(x, stacked).ExpertGemv(x, stacked, ids);
    }

    /// <summary>
    /// index_add_ of each slot's row into zeros, one slot after the other in ascending (id, slot) order, each add rounded to
    /// y's dtype (HF adds one expert at a time in ascending expert index). y [slots, N], ids int64 [slots] -> [1, N].
    /// </summary>
    public static Tensor SumInIdOrder(Tensor y, Tensor ids)
    {
        OpSupport.RequireFloat(y, "sum_in_id_order");
        if (y.Rank != 2 || ids.Rank != 1 || ids.DType != DType.Int64 || ids.Size(0) != y.Size(0))
            throw new ArgumentException($"sum_in_id_order: y [slots, N] and int64 ids [slots], got {y} and {ids}");
        return OpBackend.Of(y, ids).SumInIdOrder(y, ids);
    }

    /// <summary>Slots in the order the per-expert loop visits them: ascending id, then ascending slot.</summary>
    internal static int[] VisitOrder(long[] ids) =>
        Enumerable.Range(0, ids.Length).OrderBy(s => ids[s]).ThenBy(s => s).ToArray();
}

/// <summary>The host's indexed-expert ops: the naive versions, the per-expert loop's own engine ops.</summary>
internal sealed partial class HostOps
{
    public bool RoutesExpertsOnDevice => false;

    public Tensor TakeRows(Tensor table, Tensor ids) => table.IndexSelect(0, ids);

    // one nn.functional.linear per slot, x_s [1, K] @ stacked[id]^T [K, N], with the host Linear's arithmetic: float32 and
    // bf16 through the packed GEMM (Layers.Linear packs its weight the same way; the unpacked GEMM's fp32 sums can differ in
    // the last bit), other dtypes through Matmul; float32 accumulation, one rounding
    public Tensor ExpertGemv(Tensor x, Tensor stacked, Tensor ids)
    {
        var id = ids.ToInt64Array();
        int experts = stacked.Size(0);
        var rows = new List<Tensor>(id.Length);
        for (int s = 0; s < id.Length; s++)
        {
            if (id[s] < 0 || id[s] >= experts)
                throw new IndexOutOfRangeException($"expert_gemv: expert id {id[s]} (slot {s}) is out of range for {experts} experts");
            var xs = x.Narrow(0, x.Size(0) == 1 ? 0 : s, 1);                                      // [1, K]
            var w = stacked.Select(0, (int)id[s]);                                                  // [N, K]
            if (x.DType is not (DType.Float32 or DType.BFloat16)) { rows.Add(Matmul.Forward(xs, w.T())); continue; }
            var y = Tensor.Zeros(DType.Float32, 1, w.Size(0));                                      // [1, N] float32
            Gemm.MultiplyPacked(MatrixView.Of(xs), PackedWeight.Pack(w, GemmKernelSelector.Current), y.Span<float>(), w.Size(0));
            rows.Add(y.To(x.DType));
        }
        return Tensor.Cat(rows, 0);                                                               // [slots, N]
    }

    // torch.zeros_like, then index_add_ one expert at a time (each add the dtype's Elementwise.Add)
    public Tensor SumInIdOrder(Tensor y, Tensor ids)
    {
        var sum = Tensor.Zeros(y.DType, 1, y.Size(1));
        foreach (int s in IndexedExperts.VisitOrder(ids.ToInt64Array()))
            sum = Elementwise.Add(sum, y.Narrow(0, s, 1));
        return sum;
    }
}
