using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Layers;
using Harness.Engine.Ops;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Kernels.GemmTestSupport;

namespace Harness.Tests.Correctness.Kernels;

/// <summary>
/// Linear's weight packed once at load (issue 15): the packed product must equal the unpacked GEMM it replaces bit for bit
/// (the single float32 FMA chain over k ascending, batch-invariant mode included), its rows must not depend on M, and
/// the native bf16 kernel (vdpbf16ps, emitted at run time) must equal the instruction's scalar model bit for bit.
/// </summary>
public class PackedLinearTests
{
    // K: 1, odd, above every KC (several K blocks, an odd last pair); N: below, at and across panel edges; M: every
    // skinny kernel (1, 2..4, 5..8) and the blocked path, with edge tiles.
    private static readonly int[] Ks = [1, 7, 200, 777];
    private static readonly int[] Ns = [5, 32, 100];
    private static readonly int[] Ms = [1, 2, 3, 5, 8, 9, 17, 40];

    public static TheoryData<string, DType> KernelsAndDtypes()
    {
        var data = new TheoryData<string, DType>();
        foreach (var k in new[] { "Scalar", "Avx2", "Avx512" })
            foreach (var d in new[] { DType.Float32, DType.BFloat16 }) data.Add(k, d);
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(KernelsAndDtypes))]
    public unsafe void A_weight_packed_from_its_row_blocks_equals_the_packed_concatenation_byte_for_byte(string kernelName, DType dtype)
    {
        // the fused q/k/v and gate/up weights are packed from their parts (no host copy of the concatenation, issue 22's
        // host memory); the panels must be those of the concatenated weight, whatever the parts' widths against the panel
        // edges, and a strided part (a TP column shard, a transposed view) packs as its contiguous copy
        var kernel = Kernel(kernelName);
        SkipUnsupported(kernel);
        foreach (int k in Ks)
        {
            var parts = new[]
            {
                Tensor.Uniform(dtype, (ulong)k, -1f, 1f, 5, k),
                Tensor.Uniform(dtype, (ulong)k + 1, -1f, 1f, k, 40).T().Narrow(0, 3, 29),   // [29, k], strides (1, 40)
                Tensor.Uniform(dtype, (ulong)k + 2, -1f, 1f, 33, k),
            };
            var fromParts = PackedWeight.Pack(parts, kernel);
            var ofCat = PackedWeight.Pack(Tensor.Cat(parts, 0), kernel);
            Assert.Equal(ofCat.Bytes, fromParts.Bytes);
            Assert.True(new ReadOnlySpan<byte>(ofCat.Data, (int)ofCat.Bytes).SequenceEqual(new ReadOnlySpan<byte>(fromParts.Data, (int)fromParts.Bytes)),
                $"{kernel} {dtype.TorchName()} K={k}: the panels packed from the parts differ from the concatenation's");
            GC.KeepAlive(fromParts);
            GC.KeepAlive(ofCat);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(KernelsAndDtypes))]
    public void Packed_product_equals_the_invariant_unpacked_gemm_bit_for_bit(string kernelName, DType dtype)
    {
        var kernel = Kernel(kernelName);
        SkipUnsupported(kernel);
        using var force = Gemm.ForceKernel(kernel);
        using var widen = Bf16DotKernel.IsSupported ? Gemm.ForceNativeBf16(false) : null;
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        foreach (int k in Ks)
            foreach (int n in Ns)
            {
                var w = Tensor.Uniform(dtype, (ulong)(k * 31 + n), -1f, 1f, n, k);
                var packed = PackedWeight.Pack(w, kernel);
                var x = Tensor.Uniform(dtype, (ulong)(k + n), -1f, 1f, Ms[^1], k);
                foreach (int m in Ms)
                {
                    var rows = MatrixView.Of(x.Narrow(0, 0, m));
                    float[] expected;
                    using (ComputeSettings.UseBatchInvariant()) expected = Multiply(rows, MatrixView.Of(w.T()));
                    foreach (bool invariant in new[] { true, false })
                        foreach (int threads in new[] { 1, 2 })
                        {
                            using var mode = ComputeSettings.UseBatchInvariant(invariant);
                            using var t = ComputeSettings.UseThreads(threads);
                            var c = new float[m * n];
                            Gemm.MultiplyPacked(rows, packed, c, n);
                            Assert.False(PackedGemm.UsesNative(packed, dtype, m, invariant));
                            AssertBitsEqual(expected, c, $"{kernel} {dtype.TorchName()} M={m} K={k} N={n} invariant={invariant} threads={threads} ({PackedGemm.PathFor(packed, m)})");
                        }
                }
            }
    }

    [SkippableFact]
    public void Native_bf16_kernel_equals_the_vdpbf16ps_model_bit_for_bit()
    {
        Skip.IfNot(Bf16DotKernel.IsSupported, $"native bf16 kernel: {Bf16DotKernel.UnsupportedReason}");
        using var native = Gemm.ForceNativeBf16(true);
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        foreach (int k in Ks)
            foreach (int n in Ns)
            {
                var w = Tensor.Uniform(DType.BFloat16, (ulong)(k * 7 + n), -1f, 1f, n, k);
                var x = Tensor.Uniform(DType.BFloat16, (ulong)(k + 3 * n), -1f, 1f, Ms[^1], k);
                // bf16 subnormals (read as zero by the instruction) in both operands.
                x.Span<ushort>()[0] = 0x0001;
                w.Span<ushort>()[k > 1 ? 1 : 0] = 0x8005;
                var packed = PackedWeight.Pack(w, GemmKernel.Avx512);
                foreach (int m in Ms)
                    foreach (int threads in new[] { 1, 2 })
                    {
                        using var t = ComputeSettings.UseThreads(threads);
                        var c = new float[m * n];
                        Gemm.MultiplyPacked(MatrixView.Of(x.Narrow(0, 0, m)), packed, c, n);
                        Assert.True(PackedGemm.UsesNative(packed, DType.BFloat16, m, ComputeSettings.BatchInvariant));
                        AssertBitsEqual(NativeModel(x, w, m), c, $"native bf16 M={m} K={k} N={n} threads={threads} ({PackedGemm.PathFor(packed, m)})");
                    }
            }
    }

    [SkippableFact]
    public void Native_bf16_kernel_stays_within_float32_accumulation_error_of_the_exact_product()
    {
        Skip.IfNot(Bf16DotKernel.IsSupported, $"native bf16 kernel: {Bf16DotKernel.UnsupportedReason}");
        using var native = Gemm.ForceNativeBf16(true);
        const int m = 20, n = 70, k = 1001;
        var w = Tensor.Uniform(DType.BFloat16, 91, -1f, 1f, n, k);
        var x = Tensor.Uniform(DType.BFloat16, 92, -1f, 1f, m, k);
        var c = new float[m * n];
        Gemm.MultiplyPacked(MatrixView.Of(x), PackedWeight.Pack(w, GemmKernel.Avx512), c, n);
        AssertClose(MatrixView.Of(x), MatrixView.Of(w.T()), c, n, "native bf16 vs float64");
    }

    /// <summary>The kernel's contract, element by element: c = vdpbf16ps lane over k pairs ascending, from zero.</summary>
    private static float[] NativeModel(Tensor x, Tensor w, int m) => Bf16DotKernel.NaiveProduct(x, w, m);

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Linear_rows_are_batch_invariant_and_equal_the_unpacked_layer(DType dtype)
    {
        // The bug class: a layer whose row depends on how many rows it is computed with (decode vs prefill).
        using var mode = ComputeSettings.UseBatchInvariant();
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        const int k = 300, n = 45, rows = 24;
        var w = Tensor.Uniform(dtype, 5, -1f, 1f, n, k);
        var bias = Tensor.Uniform(dtype, 6, -1f, 1f, n);
        var linear = new Linear(w, bias);
        var x = Tensor.Uniform(dtype, 7, -1f, 1f, 2, rows / 2, k);                // [2, 12, K]: batch dims fold into M
        var whole = linear.Forward(x).To(DType.Float32).Reshape(rows, n).ToFloatArray();
        // The unpacked formula the packed layer replaces (torch's addmm: float32 accumulation, bias, one rounding).
        var unpacked = (dtype == DType.Float32
            ? Elementwise.Add(Matmul.Forward(x, w.T()), bias)
            : Elementwise.Add(Matmul.Forward(x.To(DType.Float32), w.T().To(DType.Float32)), bias.To(DType.Float32)).To(dtype))
            .To(DType.Float32).ToFloatArray();
        AssertBitsEqual(unpacked, whole, $"{dtype.TorchName()} packed Linear vs unpacked matmul");
        var flat = x.Reshape(rows, k);
        for (int m = 1; m <= rows; m++)
            for (int s = 0; s + m <= rows; s += Math.Max(1, m / 2))
            {
                var part = linear.Forward(flat.Narrow(0, s, m)).To(DType.Float32).ToFloatArray();
                AssertBitsEqual(whole.AsSpan(s * n, m * n), part, $"{dtype.TorchName()} rows {s}..{s + m - 1} computed as M={m}");
            }
    }

    [Fact]
    public void Emitted_kernel_bytes_are_what_objdump_reads_as_the_documented_assembly()
    {
        // The 1-row x 1-panel kernel, as `objdump -D -b binary -mi386:x86-64` disassembles it:
        //   mov %rdi,%r11; shl $7,%r11; lea (%r11,%r11,2),%rax; test %r9,%r9; je .zero; mov %rcx,%r10
        //   vmovups 0x0(%r10),%zmm0; vmovups 0x40(%r10),%zmm1; add %r8,%r10; jmp .start
        //   .zero: vpxord %zmm0,%zmm0,%zmm0; vpxord %zmm1,%zmm1,%zmm1
        //   .start: test %rdi,%rdi; je .store
        //   .loop: vmovups 0x0(%rdx),%zmm2; vmovups 0x40(%rdx),%zmm3
        //          vdpbf16ps 0x0(%rsi){1to16},%zmm2,%zmm0; vdpbf16ps 0x0(%rsi){1to16},%zmm3,%zmm1
        //          add $0x4,%rsi; add $0x80,%rdx; dec %rdi; jne .loop
        //   .store: vmovups %zmm0,0x0(%rcx); vmovups %zmm1,0x40(%rcx); add %r8,%rcx; vzeroupper; ret
        const string expected =
            "4989fb49c1e3074b8d045b4d85c90f841f0000004989ca62d17c4810820000000062d17c48108a400000004d01c2e90c000000" +
            "62f17d48efc062f17548efc94885ff0f843f00000062f17c4810920000000062f17c48109a4000000062f26e585286000000" +
            "0062f26658528e000000004881c6040000004881c28000000048ffcf0f85c1ffffff62f17c4811810000000062f17c481189" +
            "400000004c01c1c5f877c3";
        Assert.Equal(expected, Convert.ToHexStringLower(Bf16DotKernel.Emitter.Kernel(1, 1)));
    }
}
