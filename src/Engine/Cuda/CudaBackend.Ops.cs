using Harness.Engine.Cuda.Kernels;
using Harness.Engine.Kernels;
using Harness.Engine.Ops;
using Harness.Engine.Tensors;
using AttentionMaskRule = Harness.Engine.Attention.AttentionMask;

namespace Harness.Engine.Cuda;

/// <summary>
/// One CUDA device's <see cref="IOpBackend"/>: each op's kernel launches (CudaOps, CudaGemm, CudaDecodeOps), with the
/// arguments, operand moves and order the op's <c>if (x.IsCuda)</c> branch had before the ops moved behind the interface.
/// It calls no op of <c>Ops/*</c> (a composite such as the unfused RoPE calls this backend's own members); a host operand
/// moves to this device as before (<c>ToDevice(device)</c>). Ops/OpBackend.Of picks it from a device operand's storage.
/// </summary>
internal sealed partial class CudaBackend : IOpBackend
{
    // --- element-wise ------------------------------------------------------------------------------------------------

    public Tensor Unary(UnaryOp op, Tensor x, string name) => op switch
    {
        UnaryOp.Neg => CudaOps.Unary<NegOp>(x),
        UnaryOp.Exp => CudaOps.Unary<ExpOp>(x),
        UnaryOp.Abs => CudaOps.Unary<AbsOp>(x),
        UnaryOp.Log => CudaOps.Unary<LogOp>(x),
        UnaryOp.Sqrt => CudaOps.Unary<SqrtOp>(x),
        UnaryOp.Rsqrt => CudaOps.Unary<RsqrtOp>(x),
        UnaryOp.Tanh => CudaOps.Unary<TanhOp>(x),
        UnaryOp.Sigmoid => CudaOps.Unary<SigmoidOp>(x),
        UnaryOp.Square => CudaOps.Unary<SquareOp>(x),
        UnaryOp.Reciprocal => CudaOps.Unary<ReciprocalOp>(x),
        _ => throw CudaOps.NoCudaPath(name, x),
    };

    public Tensor Pow(Tensor x, double exponent) => CudaOps.Unary<PowScalarOp>(x, (float)exponent);

    public Tensor Scalar(BinaryOp op, Tensor a, float s, string name) => op switch
    {
        BinaryOp.Add => CudaOps.Unary<AddScalarOp>(a, s),
        BinaryOp.Sub => CudaOps.Unary<AddScalarOp>(a, -s),
        BinaryOp.Mul => CudaOps.Unary<MulScalarOp>(a, s),
        BinaryOp.Div => CudaOps.Unary<DivScalarOp>(a, s),
        _ => throw CudaOps.NoCudaPath(name + " (with a scalar)", a),
    };

    // The same arithmetic as the host (float32, one rounding) in a CUDA kernel; a host 0-dim operand moves to the device.
    public Tensor Binary(BinaryOp op, Tensor a, Tensor b, DType dt, string name)
    {
        a = a.ToDevice(device);
        b = b.ToDevice(device);
        if (a.DType != dt) a = a.To(dt);
        if (b.DType != dt && !b.DType.IsFloatingPoint()) b = b.ToHost().To(dt).ToDevice(device);
        return op switch
        {
            BinaryOp.Add => CudaOps.Binary<AddOp>(a, b, dt),
            BinaryOp.Sub => CudaOps.Binary<SubOp>(a, b, dt),
            BinaryOp.Mul => CudaOps.Binary<MulOp>(a, b, dt),
            BinaryOp.Div => CudaOps.Binary<DivOp>(a, b, dt),
            BinaryOp.Maximum => CudaOps.Binary<MaximumOp>(a, b, dt),
            BinaryOp.Minimum => CudaOps.Binary<MinimumOp>(a, b, dt),
            _ => throw CudaOps.NoCudaPath(name, a, b),
        };
    }

    // out of place, then copied into dst (the op's add with torch's result type for "add_")
    public void AddInPlace(Tensor dst, Tensor src) =>
        dst.CopyFrom(Binary(BinaryOp.Add, dst, src, OpSupport.ResultType(dst, src, "add_"), "add_"));

    // torch.clamp on the device: max(x, lo) then min(., hi), the bounds already rounded to x's dtype (exact in it).
    public Tensor Clamp(Tensor x, float? lo, float? hi)
    {
        var y = lo is float l ? CudaOps.Unary<ClampMinOp>(x, l) : x;
        return hi is float h ? CudaOps.Unary<ClampMaxOp>(y, h) : y;
    }

    public Tensor Where(Tensor mask, Tensor a, Tensor b, DType dt) => CudaOps.Where(mask, a, b, dt);

    public Tensor Compare(Tensor a, Tensor b, Func<double, double, bool> cmp) =>
        throw CudaOps.NoCudaPath("comparison (eq/ne/gt/ge/lt/le)", a, b);

    // The CUDA kernels, one per kind (gelu_new rounds after each op in bf16 on the host path; on the device it is the
    // tanh formula in float32, one rounding: exact for float32 only).
    public Tensor Activation(Tensor x, ActivationKind kind) => kind switch
    {
        ActivationKind.Gelu => CudaOps.Unary<GeluExactOp>(x),
        ActivationKind.GeluTanh or ActivationKind.GeluNew => CudaOps.Unary<GeluTanhOp>(x),
        ActivationKind.Silu => CudaOps.Unary<SiluOp>(x),
        ActivationKind.Relu => CudaOps.Unary<ReluOp>(x),
        ActivationKind.QuickGelu => CudaOps.Unary<QuickGeluOp>(x),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    // one kernel when both halves are on the device in one dtype and shape (gelu_new has none: act then mul)
    public Tensor? Gated(Tensor gate, Tensor up, ActivationKind kind)
    {
        if (!(gate.IsCuda && up.IsCuda && gate.DType == up.DType && Shape.SequenceEqual(gate.Shape, up.Shape) && kind != ActivationKind.GeluNew))
            return null;
        return kind switch
        {
            ActivationKind.Gelu => CudaOps.Gated<GeluExactOp>(gate, up),
            ActivationKind.GeluTanh => CudaOps.Gated<GeluTanhOp>(gate, up),
            ActivationKind.Silu => CudaOps.Gated<SiluOp>(gate, up),
            ActivationKind.Relu => CudaOps.Gated<ReluOp>(gate, up),
            _ => CudaOps.Gated<QuickGeluOp>(gate, up),
        };
    }

    public Tensor Softplus(Tensor x) => CudaOps.Unary<SoftplusOp>(x);

    // --- rows and reductions -----------------------------------------------------------------------------------------

    public Tensor RowWise(Tensor x, DType outDType, Ops.RowWise.RowKernel kernel) => throw CudaOps.NoCudaPath("row-wise op", x);

    public Tensor Softmax(Tensor rows, bool log, DType dtype, bool lastDim) => CudaOps.Softmax(rows, log, dtype);

    public Tensor RmsNorm(Tensor x, Tensor? weight, float eps, RmsNormKind kind)
    {
        var outDt = kind == RmsNormKind.Llama && weight!.DType != x.DType ? DType.Float32 : x.DType;
        return CudaOps.RmsNorm(x, weight?.ToDevice(device), eps, (int)kind, outDt);
    }

    public Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, double eps) =>
        CudaOps.LayerNorm(x, weight?.ToDevice(device), bias?.ToDevice(device), (float)eps);

    // one kernel when x and the residual are both on the device in one dtype and shape
    public (Tensor Sum, Tensor Normed)? AddRmsNorm(Tensor x, Tensor residual, Tensor weight, double eps, bool inPlace, ResidualNorm.Buffer? normedBuffer) =>
        x.IsCuda && residual.IsCuda && x.DType == residual.DType && Shape.SequenceEqual(x.Shape, residual.Shape)
            ? CudaOps.AddRmsNorm(x, residual, weight, (float)eps)
            : null;

    // no separate pass: Norms.RmsNorm's kernel is the one
    public Tensor? RmsNormInto(Tensor x, Tensor weight, double eps, ResidualNorm.Buffer? normedBuffer) => null;

    public (Tensor Values, Tensor? Indices) RowReduce(Tensor rows, int kind, bool withIndices, int[] outShape, DType dtype, string name) =>
        CudaOps.RowReduce(rows, kind, withIndices, outShape, dtype);

    public (Tensor Mean, Tensor Std) MeanStd(Tensor x) => CudaOps.MeanStd(x);

    public (Tensor Values, Tensor Indices) TopK(Tensor src, int k, DType dtype) => CudaOps.TopK(src, k);

    // torch's CUDA topk order: ties lower index first, as CudaOps.TopK
    public (Tensor Values, Tensor Indices) TopKTorchOrder(Tensor src, int k, DType dtype) => TopK(src, k, dtype);

    public Tensor SumInIdOrder(Tensor y, Tensor ids) => CudaOps.SumInIdOrder(y, ids);

    // --- attention ---------------------------------------------------------------------------------------------------

    public Tensor RotateHalf(Tensor x)
    {
        int d = x.Size(-1);
        return Tensor.Cat([Unary(UnaryOp.Neg, x.Narrow(-1, d / 2, d / 2), "neg"), x.Narrow(-1, 0, d / 2)], -1); // exact moves
    }

    public Tensor Rope(Tensor q, Tensor c, Tensor s, DType dt, int[] shape)
    {
        int d = q.Size(-1);
        if (dt == q.DType && c.Rank >= 2 && c.Size(-2) == q.Size(-2) && c.NumEl == q.Size(-2) * d)   // one [t, d] table: the fused kernel
            return CudaOps.Rope(q, c.ToDevice(device), s.ToDevice(device));
        // any other layout: HF's three ops, each rounding to the dtype, (q * cos) + (rotate_half(q) * sin)
        var cd = c.ToDevice(device).To(dt);
        var qc = Binary(BinaryOp.Mul, q, cd, OpSupport.ResultType(q, cd, "mul"), "mul");
        OpSupport.RequireFloat(q, "rotate_half");
        var rh = RotateHalf(q);
        var sd = s.ToDevice(device).To(dt);
        var rs = Binary(BinaryOp.Mul, rh, sd, OpSupport.ResultType(rh, sd, "mul"), "mul");
        return Binary(BinaryOp.Add, qc, rs, OpSupport.ResultType(qc, rs, "add"), "add");
    }

    public void MaskScores(AttentionMaskRule mask, Tensor scores, int t, int s, int past, int[]? blocks)
    {
        if (!mask.Causal) throw CudaOps.NoCudaPath("attention_mask (non-causal with a window or blocks)", scores);
        CudaOps.AttentionMask(scores, t, s, past, mask.Window, blocks, mask.BlocksOnSlidingLayersOnly);
    }

    // masked_fill on the device: the host mask (an input) negated and broadcast over the planes, then where
    public Tensor MaskedFill(Tensor logits, bool[] visible, int batch, int planes, float value)
    {
        var shape = logits.ShapeArray.ToArray();
        shape[1] = 1;
        var invalid = Tensor.FromArray(visible.Select(m => !m).ToArray(), shape);
        var fill = Tensor.Scalar(value, logits.DType);
        return CudaOps.Where(invalid, fill, logits, OpSupport.ResultType(fill, logits, "where"));
    }

    public bool FusesCausalAttention => true;

    public Tensor CausalAttention(Tensor q, Tensor keys, Tensor values, int past, int window, float scaling) =>
        CudaOps.Attention(q, keys, values, past, window, scaling);

    public bool DecodesAtDevicePosition => true;

    public Tensor RopeAppendAt(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor keys, Tensor values, Tensor position) =>
        CudaDecodeOps.RopeAppendAt(q, k, v, cos, sin, keys, values, position);

    public Tensor AttentionAt(Tensor q, Tensor keys, Tensor values, Tensor position, int window, float scaling) =>
        CudaDecodeOps.AttentionAt(q, keys, values, position, window, scaling);

    // --- index, conv -------------------------------------------------------------------------------------------------

    public Tensor Embedding(Tensor weight, Tensor ids) => CudaOps.Embedding(weight, ids);

    // one rank on a GPU: the plain lookup (Ops.Embedding.Lookup's checks, then its kernel)
    public Tensor? WholeVocabLookup(Tensor weight, Tensor ids)
    {
        Ops.Embedding.CheckArguments(weight, ids);
        return CudaOps.Embedding(weight, ids);
    }

    // a one-token MoE block runs from the device-held expert ids (a graph step reads nothing back); in batch-invariant
    // mode the per-expert loop stays, its linears on the invariant GEMM whose bits a token shares with any batch (a graph
    // capture of that loop then fails on its read-back and the graph decoder names it)
    public bool RoutesExpertsOnDevice => !Runtime.ComputeSettings.BatchInvariant;

    public Tensor TakeRows(Tensor table, Tensor ids) => CudaOps.IndexSelectAt(table, ids);

    public Tensor Im2Col3x3S2(Tensor x) => CudaOps.Im2Col3x3S2(x);

    public Tensor DepthwiseCausalConv1d(Tensor x, Tensor weight) => CudaOps.DepthwiseCausalConv1d(x, weight);

    public Tensor ContextWindows(Tensor x, int u, int w, int ctx, int left) => CudaOps.ContextWindows(x, u, w, ctx, left);

    // --- GEMM --------------------------------------------------------------------------------------------------------

    public Tensor Mm(Tensor a, Tensor b) =>
        CudaGemm.Multiply(a.ToDevice(device).Unsqueeze(0), b.ToDevice(device).Unsqueeze(0)).Squeeze(0);

    public Tensor BatchedMm(Tensor a, Tensor b, int[] batch) => CudaGemm.Multiply(a.ToDevice(device), b.ToDevice(device));

    public Tensor ExpertGemv(Tensor x, Tensor stacked, Tensor ids) => CudaGemm.ExpertGemv(x, stacked, ids);
}
