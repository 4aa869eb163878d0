using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;

namespace Harness.Engine.Layers;

/// <summary>
/// nn.Linear: y = x W^T (+ b), the bias added before the one rounding to a low-precision dtype, as torch's addmm. The weight is
/// [out_features, in_features] as HF stores it. Input [..., in], output [..., out].
/// <para>On the CPU (float32, or bfloat16 x with a bfloat16 W) the weight is packed once, at the first forward, into the
/// micro-kernels' panel layout (<see cref="PackedWeight"/>: bf16 stays bf16 where AVX-512 runs) and every call multiplies
/// by the packed copy: no per-call transposition or packing of W. The result equals the unpacked
/// <c>Matmul.Forward(x, W.T())</c> bit for bit in batch-invariant mode (the same float32 FMA chain over k ascending) and
/// for float32 in both modes; bf16 in normal mode runs the native vdpbf16ps kernel where the CPU has AVX512_BF16
/// (float32 accumulation, one rounding to bf16; see <see cref="PackedGemm"/>). W must not be written after the first
/// forward (the packed copy would not see it). Other dtypes and CUDA tensors take <see cref="Matmul"/>.</para>
/// <para>Host memory: the packed copy is the weight's one resident copy. Once packed, the pages of a weight that is a view of
/// a memory-mapped checkpoint are given back (<see cref="IO.MappedRegion.ReleaseResident"/>; read again from the file if an
/// unpacked path reads W), and a fused weight (<see cref="Stacked"/>: q/k/v, gate/up) is packed straight from its parts,
/// never concatenated on the host unless such a path asks for <see cref="Weight"/>. Measured on a 1.24 B bf16 Llama
/// (notes/issue-22-hostmem.md): 6.7 GiB resident after the prefill before (the mapped file, the fused and lm_head copies,
/// the packed copies: 2.7x its 2.3 GiB of weights); 2.4 GiB after (1.0x; peak 2.9 GiB while the tied lm_head packs).</para>
/// </summary>
public sealed class Linear
{
    /// <summary>W [out_features, in_features]: the one given, or cat(parts, 0) of a <see cref="Stacked"/> weight, made at
    /// the first read on the host (the packed path never reads it).</summary>
    public Tensor Weight
    {
        get
        {
            if (Volatile.Read(ref _weight) is { } w) return w;
            lock (_gate) return _weight ??= Tensor.Cat(_parts, 0);   // [sum(out_i), in]
        }
    }

    public Tensor? Bias { get; }

    public int InFeatures { get; }
    public int OutFeatures { get; }

    private readonly object _gate = new();
    private readonly IReadOnlyList<Tensor> _parts;   // W's row blocks, in order (one: W itself)
    private Tensor? _weight;
    private PackedWeight? _packed;

    public Linear(Tensor weight, Tensor? bias = null)
        : this([weight.Rank == 2 ? weight
            : throw new ArgumentException($"a Linear weight is [out_features, in_features], got shape {Shape.Format(weight.Shape)}")], bias) =>
        _weight = weight;

    private Linear(IReadOnlyList<Tensor> parts, Tensor? bias)
    {
        _parts = parts;
        Bias = bias;
        InFeatures = parts[0].Shape[1];
        OutFeatures = parts.Sum(p => p.Shape[0]);
    }

    /// <summary>
    /// One Linear over W = cat(<paramref name="parts"/>, 0) (vLLM's fused qkv_proj and gate_up_proj): the same products as
    /// the concatenated weight's. On the host the concatenation is not made (the packed copy is read from the parts, see the
    /// class remarks); on a GPU it is made here, at once, as a device copy.
    /// </summary>
    /// <param name="parts">Row blocks [out_i, in], one dtype and one in_features.</param>
    /// <param name="bias">[sum(out_i)] or null.</param>
    public static Linear Stacked(IReadOnlyList<Tensor> parts, Tensor? bias = null)
    {
        if (parts.Count == 0) throw new ArgumentException("a stacked Linear needs at least one weight");
        foreach (var p in parts)
            if (p.Rank != 2 || p.Shape[1] != parts[0].Shape[1] || p.DType != parts[0].DType)
                throw new ArgumentException($"the parts of a stacked Linear weight are [out_i, {parts[0].Shape[1]}] of {parts[0].DType.TorchName()}, got {p.DType.TorchName()} {Shape.Format(p.Shape)}");
        if (parts.Count == 1 || !parts.All(OpBackend.OnHost)) return new Linear(Tensor.Cat(parts, 0), bias);
        return new Linear(parts.ToArray(), bias);
    }

    public Tensor Forward(Tensor x) => Forward(x, null);

    /// <param name="x">[..., in]</param>
    /// <param name="output">Where y goes: a contiguous tensor of x's dtype with [..., out]'s element count (the caller's
    /// reusable buffer, so a decode step allocates no tensor storage), or null for a fresh tensor. Its contents are
    /// overwritten; the same bits as without it.</param>
    /// <returns>y [..., out]: a view of <paramref name="output"/> when one is given.</returns>
    public Tensor Forward(Tensor x, Tensor? output)
    {
        if (x.Size(-1) != InFeatures)
            throw new ArgumentException(
                $"mat1 and mat2 shapes cannot be multiplied ({x.NumEl / Math.Max(x.Size(-1), 1)}x{x.Size(-1)} and {InFeatures}x{OutFeatures})");
        if (output is not null && (!output.IsContiguous || output.DType != x.DType || OpBackend.OnHost(output) != OpBackend.OnHost(x)
                                   || output.NumEl != x.NumEl / InFeatures * OutFeatures))
            throw new ArgumentException($"Linear output buffer {output} cannot hold [{x.NumEl / InFeatures}, {OutFeatures}] of {x.DType.TorchName()}");
        if (UsesPackedWeight(x)) return PackedForward(x, output);
        if (output is null) return Unpacked(x);
        var y = Unpacked(x);
        output.Reshape(y.ShapeArray).CopyFrom(y);
        return output.Reshape(y.ShapeArray);
    }

    private Tensor Unpacked(Tensor x)
    {
        if (Bias is null) return Matmul.Forward(x, Weight.T());   // [..., out]
        if (x.DType == DType.Float32) return Elementwise.Add(Matmul.Forward(x, Weight.T()), Bias);
        // torch's addmm for bf16/fp16 accumulates in float32, adds the bias there and rounds once (F.linear with a bias
        // equals (x.float() @ W.float().T + b.float()).to(dtype) bit for bit; rounding the product first differs by an ulp).
        // bf16/fp16 products are exact in float32, so the float32 GEMM is the low-precision GEMM before its rounding.
        var (weightT32, bias32) = Float32Copies();
        var y32 = Matmul.Forward(x.To(DType.Float32), weightT32);      // [..., out] float32
        return Elementwise.Add(y32, bias32).To(x.DType);
    }

    private (Tensor WeightT, Tensor Bias)? _float32;

    /// <summary>
    /// W^T [in, out] and b in float32 where they live, made once at the first low-precision forward with a bias and kept
    /// (W, b must not be written after it, as for the packed copy): the same tensors <c>Weight.T().To(Float32)</c> and
    /// <c>Bias.To(Float32)</c> made on every call before (12 MiB per Qwen2-VL-2B layer per decode step on the GPU).
    /// </summary>
    private (Tensor WeightT, Tensor Bias) Float32Copies()
    {
        if (_float32 is { } c) return c;
        lock (_gate)
        {
            if (_float32 is { } again) return again;
            var made = (Float32ToKeep(Weight.T()), Float32ToKeep(Bias!));
            Float32Conversions++;
            _float32 = made;
            return made;
        }
    }

    // t.To(Float32) (t itself when already float32), made outside any step's scratch allocator.
    private static Tensor Float32ToKeep(Tensor t) => t.DType == DType.Float32 ? t : t.Backend.CopyToKeep(t, DType.Float32);

    /// <summary>How many times the float32 copies of W^T and b were made (once per layer: what the cache saves).</summary>
    internal int Float32Conversions { get; private set; }

    private bool UsesPackedWeight(Tensor x) =>
        OpBackend.OnHost(x, _parts[0]) && (Bias is null || OpBackend.OnHost(Bias)) && x.DType == _parts[0].DType && x.DType is DType.Float32 or DType.BFloat16;

    /// <summary>The packed weight for the current micro-kernel (packed on first use; repacked only if a test forces another kernel).</summary>
    internal PackedWeight Packed()
    {
        var kernel = GemmKernelSelector.Current;
        var (layout, nr) = PackedWeight.LayoutFor(_parts[0].DType, kernel);
        var p = Volatile.Read(ref _packed);
        if (p is not null && p.Layout == layout && p.NR == nr && p.Kernel == kernel) return p;
        lock (_gate)
        {
            p = _packed;
            if (p is not null && p.Layout == layout && p.NR == nr && p.Kernel == kernel) return p;
            p = PackedWeight.Pack(_parts, kernel);
            Volatile.Write(ref _packed, p);
            foreach (var part in _parts) IO.MappedRegion.ReleaseResident(part);   // the packed copy is the resident one now
            return p;
        }
    }

    // [..., in] -> [..., out]: one GEMM over the folded rows, float32 accumulation, the bias added in float32, one rounding.
    // With an output buffer: float32 writes straight into it; bf16 goes through this thread's float32 scratch and is
    // rounded into it once (the same arithmetic as y.To(bf16)); the bias is added in place in float32.
    private Tensor PackedForward(Tensor x, Tensor? output)
    {
        var packed = Packed();
        var rows = x.Reshape(-1, InFeatures);                            // [M, in]
        int m = rows.Shape[0];
        var outShape = x.ShapeArray;
        outShape[^1] = OutFeatures;
        if (output is null)
        {
            var y = Tensor.Zeros(DType.Float32, m, OutFeatures);         // [M, out] float32
            if (m > 0) Gemm.MultiplyPacked(MatrixView.Of(rows), packed, y.Span<float>(), OutFeatures);
            if (Bias is not null) y = Elementwise.Add(y, Bias.To(DType.Float32));
            return (x.DType == DType.Float32 ? y : y.To(x.DType)).Reshape(outShape);
        }
        int n = m * OutFeatures;
        var c = x.DType == DType.Float32 ? output.Span<float>()[..n] : Float32Scratch(n);
        if (m > 0) Gemm.MultiplyPacked(MatrixView.Of(rows), packed, c, OutFeatures);
        if (Bias is not null)
        {
            var b = BiasFloat32();
            for (int i = 0; i < m; i++)
                System.Numerics.Tensors.TensorPrimitives.Add(c.Slice(i * OutFeatures, OutFeatures), b, c.Slice(i * OutFeatures, OutFeatures));
        }
        if (x.DType == DType.BFloat16) BFloat16.FromFloat(c, output.Span<ushort>()[..n]);
        return output.Reshape(outShape);
    }

    [ThreadStatic] private static float[]? _scratch;

    private static Span<float> Float32Scratch(int n)
    {
        if (_scratch is null || _scratch.Length < n) _scratch = new float[Math.Max(n, 2 * (_scratch?.Length ?? 0))];
        return _scratch.AsSpan(0, n);
    }

    private float[]? _biasFloat32;

    private ReadOnlySpan<float> BiasFloat32() => _biasFloat32 ??= Bias!.To(DType.Float32).Contiguous().ToFloatArray();
}
