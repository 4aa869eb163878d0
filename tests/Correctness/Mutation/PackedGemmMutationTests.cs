using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;
using Harness.Engine.Tensors;
using static Harness.Tests.Correctness.Kernels.GemmTestSupport;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The packed-weight GEMM (src/Engine/Kernels/Gemm: PackedGemm.cs, PackedWeight.cs, Bf16DotKernel.cs,
/// PackedSelfCheck.cs): every path a Linear layer's product takes (skinny M &lt;= 8 with its 1-, 4- and 8-row kernels
/// and panel groups, the blocked 8- and 14-row tiles, bf16 pairs widened or native vdpbf16ps, one or two threads, a
/// weight above the 1 MiB multi-task bound) compared bit for bit with its documented naive computation, the packed
/// layout byte for byte with its documentation, and the refusals, names and host detection the unit tests never
/// assert. Each is a Stryker.NET mutant of the kernels slice (notes/issue-21-mutgemm.md).
/// </summary>
public class PackedGemmMutationTests
{
    private static readonly int[] Ms = [1, 2, 3, 4, 5, 8, 9, 15, 28];

    /// <summary>The rows of the layouts' naive models: (kernel, weight dtype, native).</summary>
    public static TheoryData<string, DType, bool> Layouts() => new()
    {
        { "Avx512", DType.Float32, false },
        { "Avx512", DType.BFloat16, false },
        { "Avx512", DType.BFloat16, true },
        { "Avx2", DType.Float32, false },
        { "Avx2", DType.BFloat16, false },
        { "Scalar", DType.Float16, false },
    };

    private static void AssertC(float[] expected, float[] c, int m, int n, int ldc, string what)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                if (BitConverter.SingleToUInt32Bits(expected[i * n + j]) != BitConverter.SingleToUInt32Bits(c[i * ldc + j]))
                    Assert.Fail($"{what}: C[{i},{j}] = {c[i * ldc + j]:R}, the model gives {expected[i * n + j]:R}");
        for (int i = 0; i + 1 < m; i++)
            for (int j = n; j < ldc; j++)
                Assert.True(float.IsNaN(c[i * ldc + j]), $"{what}: C[{i},{j}] in the ldc gap was written");
        for (int e = (m - 1) * ldc + n; e < c.Length; e++)
            Assert.True(float.IsNaN(c[e]), $"{what}: C[{e}] past the last row was written");
    }

    [SkippableTheory]
    [MemberData(nameof(Layouts))]
    public void Every_packed_path_equals_its_naive_model_bit_for_bit(string kernelName, DType wdtype, bool native)
    {
        // mutants: the skinny kernels' row and panel arithmetic (F32x1x128's four panels, F32x4x64's two, the 8-row
        // tile, the single-panel tails, the bf16 pairs' low/high halves), the panel groups and their tails (N = 167: six
        // panels, a short last one), the direct store against the tile copy, the blocked nest's KC (1024, 384, 192) and
        // MC blocks and its edge tiles, the 8- against 14-row tile choice, the pair packing of A (aligned fast path,
        // odd kc, a transposed or misaligned X), the thread split of panels and rows, native's K pairs and padding
        var kernel = Kernel(kernelName);
        SkipUnsupported(kernel);
        Skip.If(native && !Bf16DotKernel.IsSupported, $"native bf16: {Bf16DotKernel.UnsupportedReason}");
        using var force = Gemm.ForceKernel(kernel);
        using var pick = Bf16DotKernel.IsSupported ? Gemm.ForceNativeBf16(native) : null;
        using var parallel = ComputeSettings.UseParallelThreshold(0);
        var xdtypes = wdtype == DType.Float32 ? new[] { DType.Float32, DType.BFloat16 }
            : wdtype == DType.Float16 ? new[] { DType.Float16 } : native ? new[] { DType.BFloat16 } : new[] { DType.BFloat16, DType.Float32, DType.Float16 };
        var cases = new List<(int K, int N, int[] Ms)>
        {
            (1, 5, Ms), (8, 167, Ms), (401, 33, [1, 2, 5, 9, 15, 28]), (1030, 40, [3, 9, 16]),
        };
        // above 1 MiB of packed weight the skinny path splits its panels over tasks
        cases.Add(wdtype == DType.BFloat16 && kernel == GemmKernel.Avx512 ? (1030, 520, [1, 5]) : (1030, 300, [1, 5]));
        foreach (var (k, n, ms) in cases)
        {
            var w = Tensor.Uniform(wdtype, (ulong)(k * 5 + n), -1f, 1f, n, k);
            var packed = PackedWeight.Pack(w, kernel);
            var wT = MatrixView.Of(w.T());
            foreach (var xdtype in xdtypes)
                foreach (int layout in new[] { 0, 1, 2, 3 })
                {
                    if (layout != 0 && (xdtype != xdtypes[0] || k == 1030)) continue;
                    int mMax = ms[^1];
                    // 0: contiguous; 1: transposed (column stride 1 of a [K, M] tensor: element stride M); 2: rows one element
                    // past a 2-element boundary (the pair packing's unaligned path)
                    var x = layout switch
                    {
                        0 => Tensor.Uniform(xdtype, (ulong)(k + 7 * n), -1f, 1f, mMax, k),
                        1 => Tensor.Uniform(xdtype, (ulong)(k + 7 * n), -1f, 1f, k, mMax).T(),
                        2 => Tensor.Uniform(xdtype, (ulong)(k + 7 * n), -1f, 1f, mMax, k + 1).Narrow(1, 1, k),
                        // 3: a NaN just past each row's last element: a packing that reads one k too far poisons the row
                        _ => WithNanColumn(Tensor.Uniform(xdtype, (ulong)(k + 7 * n), -1f, 1f, mMax, k + 1)).Narrow(1, 0, k),
                    };
                    foreach (int m in ms)
                    {
                        var rows = x.Narrow(0, 0, m);
                        var xv = MatrixView.Of(rows);
                        float[] chain = GemmMutationTests.ChainModel(xv, wT);
                        float[]? nativeModel = null;
                        foreach (var (invariant, threads) in new[] { (false, 1), (false, 2), (true, 1) })
                            {
                                using var mode = ComputeSettings.UseBatchInvariant(invariant);
                                using var t = ComputeSettings.UseThreads(threads);
                                bool usesNative = PackedGemm.UsesNative(packed, xdtype, m, invariant);
                                Assert.Equal(native && !invariant && xdtype == DType.BFloat16, usesNative);
                                float[] expected = usesNative ? nativeModel ??= Bf16DotKernel.NaiveProduct(rows.Contiguous(), w, m) : chain;
                                int ldc = n + 2;
                                var c = new float[(m - 1) * ldc + n + GemmMutationTests.Tail];
                                Array.Fill(c, float.NaN);
                                Gemm.MultiplyPacked(xv, packed, c, ldc);
                                AssertC(expected, c, m, n, ldc, $"{kernel} W {wdtype.TorchName()} X {xdtype.TorchName()} layout {layout} M={m} K={k} N={n} invariant={invariant} threads={threads} ({PackedGemm.PathFor(packed, m)}{(usesNative ? ", native" : "")})");
                            }
                    }
                }
            GC.KeepAlive(packed);
        }
    }

    private static Tensor WithNanColumn(Tensor t)
    {
        int rows = t.Shape[0], cols = t.Shape[1];
        for (int i = 0; i < rows; i++)
            switch (t.DType)
            {
                case DType.Float32: t.Span<float>()[i * cols + cols - 1] = float.NaN; break;
                case DType.Float16: t.Span<Half>()[i * cols + cols - 1] = Half.NaN; break;
                default: t.Span<ushort>()[i * cols + cols - 1] = 0x7FC0; break;
            }
        return t;
    }

    [SkippableFact]
    public void A_nan_left_in_the_scratch_by_an_earlier_product_does_not_reach_an_odd_k_product()
    {
        // mutants: the widened bf16 paths' clearing of an odd K's padded A row (WideTile.PackA, WideSkinny.PackA): the
        // pad multiplies W's zero pad, harmless for finite garbage but NaN for a NaN an earlier product packed there
        // (the per-thread scratch is reused across products)
        Skip.IfNot(GemmKernelSelector.IsSupported(GemmKernel.Avx512), "the bf16 pairs need AVX-512");
        using var widen = Bf16DotKernel.IsSupported ? Gemm.ForceNativeBf16(false) : null;
        using var threads = ComputeSettings.UseThreads(1);
        var w8 = PackedWeight.Pack(Tensor.Uniform(DType.BFloat16, 1, -1f, 1f, 40, 8), GemmKernel.Avx512);
        var w7 = Tensor.Uniform(DType.BFloat16, 2, -1f, 1f, 40, 7);
        var p7 = PackedWeight.Pack(w7, GemmKernel.Avx512);
        foreach (int m in new[] { 8, 9, 3, 1 })
        {
            var poison = MatrixView.Of(Tensor.Full(DType.BFloat16, double.NaN, m, 8));
            Gemm.MultiplyPacked(poison, w8, new float[m * 40], 40);
            var x = MatrixView.Of(Tensor.Uniform(DType.BFloat16, 3, -1f, 1f, m, 7));
            var c = new float[m * 40];
            Gemm.MultiplyPacked(x, p7, c, 40);
            AssertBitsEqual(GemmMutationTests.ChainModel(x, MatrixView.Of(w7.T())), c, $"M={m} K=7 after a NaN product ({PackedGemm.PathFor(p7, m)})");
        }
        GC.KeepAlive(w8);
        GC.KeepAlive(p7);
    }

    [SkippableTheory]
    [InlineData("Avx512", DType.Float32)]
    [InlineData("Avx512", DType.BFloat16)]
    [InlineData("Avx2", DType.BFloat16)]
    [InlineData("Scalar", DType.Float16)]
    public unsafe void The_packed_layout_is_the_documented_one_byte_for_byte(string kernelName, DType dtype)
    {
        // mutants: PackF32's and PackPairs' indices, the zero padding past N and of an odd K's last pair (native memory
        // is not zeroed: a padding element left unwritten is garbage), the element widening per source dtype, the
        // panel count, sizes and strides the products read
        var kernel = Kernel(kernelName);
        SkipUnsupported(kernel);
        foreach (int k in new[] { 1, 7, 10 })
        {
            const int n = 37;
            var w = Tensor.Uniform(dtype, (ulong)(k + 11), -2f, 2f, n, k);
            var packed = PackedWeight.Pack(w, kernel);
            var (layout, nr) = PackedWeight.LayoutFor(dtype, kernel);
            Assert.Equal(layout, packed.Layout);
            Assert.Equal(nr, packed.NR);
            Assert.Equal(kernel, packed.Kernel);
            Assert.Equal(dtype, packed.SourceDType);
            Assert.Equal((n, k), (packed.N, packed.K));
            int panels = (n + nr - 1) / nr, pairs = (k + 1) / 2;
            Assert.Equal(panels, packed.Panels);
            var wv = MatrixView.Of(w);
            if (layout == PackedLayout.F32Panels)
            {
                Assert.Equal((nint)k * nr * 4, packed.PanelBytes);
                Assert.Equal(nr * 4, packed.BytesPerK);
                var d = new ReadOnlySpan<float>(packed.Data, panels * k * nr);
                for (int p = 0; p < panels; p++)
                    for (int kk = 0; kk < k; kk++)
                        for (int j = 0; j < nr; j++)
                        {
                            int col = p * nr + j;
                            float want = col < n ? wv.Get(col, kk) : 0f;
                            Assert.True(BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(d[p * k * nr + kk * nr + j]),
                                $"{kernel} {dtype.TorchName()} K={k}: panel {p} k {kk} column {j}");
                        }
            }
            else
            {
                Assert.Equal((nint)pairs * 128, packed.PanelBytes);
                Assert.Equal(64, packed.BytesPerK);
                var d = new ReadOnlySpan<ushort>(packed.Data, panels * pairs * 64);
                var bits = w.Span<ushort>();
                for (int p = 0; p < panels; p++)
                    for (int t = 0; t < pairs; t++)
                        for (int j = 0; j < 32; j++)
                            for (int h = 0; h < 2; h++)
                            {
                                int col = p * 32 + j, kk = 2 * t + h;
                                ushort want = col < n && kk < k ? bits[col * k + kk] : (ushort)0;
                                Assert.True(want == d[((p * pairs + t) * 32 + j) * 2 + h], $"bf16 pairs K={k}: panel {p} pair {t} column {j} half {h}");
                            }
            }
            Assert.Equal((long)panels * packed.PanelBytes, packed.Bytes);
            Assert.True((nint)packed.Data % 64 == 0);
            GC.KeepAlive(packed);
        }
    }

    [SkippableFact]
    public unsafe void A_weight_of_two_mib_or_more_lies_on_huge_page_boundaries()
    {
        // mutants: the huge-page rule (Bytes >= 2 MiB, Linux) and its rounding: the panels of a large weight start on a
        // 2 MiB boundary (one TLB entry per 2 MiB for the blocked path's scattered panel rows), a small one on 64 bytes
        Skip.IfNot(OperatingSystem.IsLinux() && GemmKernelSelector.IsSupported(GemmKernel.Avx512), "Linux and AVX-512 only");
        var big = PackedWeight.Pack(Tensor.Zeros(DType.Float32, 512, 1024), GemmKernel.Avx512);   // exactly 2 MiB
        Assert.Equal(2L << 20, big.Bytes);
        Assert.True((nint)big.Data % (2 << 20) == 0, "a 2 MiB weight is 2 MiB-aligned");
        Assert.Equal(0f, ((float*)big.Data)[(2 << 18) - 1]);
        GC.KeepAlive(big);
        var empty = PackedWeight.Pack(Tensor.Zeros(DType.Float32, 0, 4), GemmKernel.Avx512);
        Assert.Equal(0, empty.Bytes);
        Assert.True(empty.Data != null);
    }

    [Fact]
    public void Packing_refuses_no_parts_a_non_matrix_and_parts_of_another_dtype_or_k()
    {
        // mutants: each refusal removed or its message emptied
        Assert.Equal("a packed weight needs at least one part",
            Assert.Throws<ArgumentException>(() => PackedWeight.Pack(Array.Empty<Tensor>(), GemmKernel.Scalar)).Message);
        Assert.Equal($"a packed weight is [N, K], got shape {Shape.Format([5])}",
            Assert.Throws<ArgumentException>(() => PackedWeight.Pack(Tensor.Zeros(DType.Float32, 5), GemmKernel.Scalar)).Message);
        Assert.Equal($"the parts of a packed weight share dtype and K: float32 [*, 4] and float32 {Shape.Format([2, 5])}",
            Assert.Throws<ArgumentException>(() => PackedWeight.Pack([Tensor.Zeros(DType.Float32, 3, 4), Tensor.Zeros(DType.Float32, 2, 5)], GemmKernel.Scalar)).Message);
        Assert.Equal($"the parts of a packed weight share dtype and K: float32 [*, 4] and bfloat16 {Shape.Format([2, 4])}",
            Assert.Throws<ArgumentException>(() => PackedWeight.Pack([Tensor.Zeros(DType.Float32, 3, 4), Tensor.Zeros(DType.BFloat16, 2, 4)], GemmKernel.Scalar)).Message);
        Assert.Equal((PackedLayout.Bf16Pairs, 32), PackedWeight.LayoutFor(DType.BFloat16, GemmKernel.Avx512));
        Assert.Equal((PackedLayout.F32Panels, 16), PackedWeight.LayoutFor(DType.BFloat16, GemmKernel.Avx2));
        Assert.Equal((PackedLayout.F32Panels, 32), PackedWeight.LayoutFor(DType.Float32, GemmKernel.Avx512));
        Assert.Equal((PackedLayout.F32Panels, 8), PackedWeight.LayoutFor(DType.Float16, GemmKernel.Scalar));
    }

    [Fact]
    public unsafe void A_packed_product_refuses_mismatched_shapes_and_short_outputs_and_clears_for_an_empty_k()
    {
        // mutants: MultiplyPacked's and PackedGemm.Multiply's checks and messages, the output bound's edge (exactly
        // (M - 1) * ldc + N floats fit), an empty K writing zeros row by row (not the ldc gap), M = 0 or N = 0 returning
        var w = PackedWeight.Pack(Tensor.Uniform(DType.Float32, 1, -1f, 1f, 7, 6), GemmKernel.Scalar);
        var x = Random(DType.Float32, 2, 3, 5);
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (3x5 and 6x7)",
            Assert.Throws<ArgumentException>(() => Gemm.MultiplyPacked(x, w, new float[21], 7)).Message);
        var x6 = Random(DType.Float32, 3, 3, 6);
        Assert.Equal("output of 20 floats cannot hold a 3x7 result with ldc 7",
            Assert.Throws<ArgumentException>(() => Gemm.MultiplyPacked(x6, w, new float[20], 7)).Message);
        Gemm.MultiplyPacked(x6, w, new float[21], 7);
        Assert.Equal("ldc 6 is smaller than N 7",
            Assert.Throws<ArgumentException>(() => Gemm.MultiplyPacked(x6, w, new float[40], 6)).Message);
        string? direct = null;
        var op = GemmOperand.Pin(x, out var handle);
        using (handle)
        {
            var c = new float[21];
            fixed (float* pc = c)
            {
                try { PackedGemm.Multiply(op, w, pc, 7, invariant: false, threads: 1); }
                catch (ArgumentException e) { direct = e.Message; }
            }
        }
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (3x5 and 6x7)", direct);
        foreach (var kernel in new[] { GemmKernel.Scalar, GemmKernel.Avx512 }.Where(GemmKernelSelector.IsSupported))
            foreach (int m in new[] { 1, 3, 20 })
            {
                var empty = PackedWeight.Pack(Tensor.Zeros(DType.Float32, 9, 0), kernel);
                var c = new float[(m + 1) * 12];
                Array.Fill(c, float.NaN);
                Gemm.MultiplyPacked(Random(DType.Float32, 4, m, 0), empty, c, 12);
                for (int e = 0; e < c.Length; e++)
                    Assert.Equal(e / 12 < m && e % 12 < 9 ? 0f : float.NaN, c[e]);
                Assert.Equal(PackedPath.None, PackedGemm.PathFor(empty, m));
            }
        var untouched = new float[] { 5f };
        Gemm.MultiplyPacked(Random(DType.Float32, 5, 0, 6), w, untouched, 7);
        if (Bf16DotKernel.IsSupported && GemmKernelSelector.IsSupported(GemmKernel.Avx512))
            using (Gemm.ForceNativeBf16(true))
                Gemm.MultiplyPacked(Random(DType.BFloat16, 6, 0, 6), PackedWeight.Pack(Tensor.Zeros(DType.BFloat16, 7, 6), GemmKernel.Avx512), untouched, 7);   // no 0-row kernel exists
        var noColumns = PackedWeight.Pack(Tensor.Zeros(DType.Float32, 0, 6), GemmKernel.Scalar);
        Gemm.MultiplyPacked(x6, noColumns, untouched, 1);
        Assert.Equal(5f, untouched[0]);
        Assert.Equal(PackedPath.None, PackedGemm.PathFor(noColumns, 3));
        GC.KeepAlive(w);
    }

    [SkippableFact]
    public void The_path_and_the_native_choice_follow_the_layout_rows_dtype_and_mode()
    {
        // mutants: Skinny's M <= 8 and its layout rule (float32 panels stream only with the AVX-512 kernel), UsesNative's
        // four conditions
        Skip.IfNot(GemmKernelSelector.IsSupported(GemmKernel.Avx512) && Bf16DotKernel.IsSupported, "AVX-512 with BF16 only");
        var f32 = PackedWeight.Pack(Tensor.Zeros(DType.Float32, 40, 8), GemmKernel.Avx512);
        var f32Avx2 = PackedWeight.Pack(Tensor.Zeros(DType.Float32, 40, 8), GemmKernel.Avx2);
        var pairs = PackedWeight.Pack(Tensor.Zeros(DType.BFloat16, 40, 8), GemmKernel.Avx512);
        var bf16Panels = PackedWeight.Pack(Tensor.Zeros(DType.BFloat16, 40, 8), GemmKernel.Avx2);
        Assert.Equal(PackedPath.Skinny, PackedGemm.PathFor(f32, 8));
        Assert.Equal(PackedPath.Blocked, PackedGemm.PathFor(f32, 9));
        Assert.Equal(PackedPath.Blocked, PackedGemm.PathFor(f32Avx2, 1));
        Assert.Equal(PackedPath.Skinny, PackedGemm.PathFor(pairs, 1));
        Assert.Equal(PackedPath.Skinny, PackedGemm.PathFor(pairs, 8));
        Assert.Equal(PackedPath.Blocked, PackedGemm.PathFor(pairs, 9));
        Assert.Equal(PackedPath.Blocked, PackedGemm.PathFor(bf16Panels, 1));
        using (Gemm.ForceNativeBf16(true))
        {
            Assert.True(PackedGemm.UsesNative(pairs, DType.BFloat16, 3, invariant: false));
            Assert.False(PackedGemm.UsesNative(pairs, DType.BFloat16, 3, invariant: true));
            Assert.False(PackedGemm.UsesNative(pairs, DType.Float32, 3, invariant: false));
            Assert.False(PackedGemm.UsesNative(bf16Panels, DType.BFloat16, 3, invariant: false));
        }
        using (Gemm.ForceNativeBf16(false)) Assert.False(PackedGemm.UsesNative(pairs, DType.BFloat16, 3, invariant: false));
    }

    // ---- the native kernel: host detection, selection, its scalar model, the emitter's limits ----

    [Fact]
    public void The_native_bf16_kernel_is_supported_exactly_where_the_cpu_has_avx512_bf16()
    {
        // mutants: DetectUnsupported's checks (architecture, OS, AVX-512F, CPUID leaf 7.1 EAX bit 5): a host that has
        // the instruction reported without it would silently skip every native test and run the widened path
        bool has = RuntimeInformation.ProcessArchitecture == Architecture.X64 && OperatingSystem.IsLinux() && Avx512F.IsSupported
                   && (X86Base.CpuId(7, 1).Eax & (1 << 5)) != 0;
        Assert.Equal(has, Bf16DotKernel.IsSupported);
        Assert.Equal(has, Gemm.NativeBf16UnsupportedReason is null);
        if (!has) return;
        Assert.True(Bf16DotKernel.Parse("native"));
        Assert.False(Bf16DotKernel.Parse("widen"));
        Assert.Null(Bf16DotKernel.Parse("auto"));
        Assert.Null(Bf16DotKernel.Parse(""));
        Assert.Null(Bf16DotKernel.Parse(null));
        Assert.Equal("HARNESS_BF16_KERNEL=fast is not a bf16 kernel; known: auto, native, widen",
            Assert.Throws<ArgumentException>(() => Bf16DotKernel.Parse("fast")).Message);
        bool amd = X86Base.CpuId(0, 0).Ebx == 0x68747541;
        if (EngineSettings.Current.Bf16Native is null)
        {
            Assert.Equal(amd, Bf16DotKernel.UseNative(1));
            Assert.Equal(amd ? "native vdpbf16ps (AMD core)"
                : "bf16 panels widened in registers (Intel core: vdpbf16ps runs at half the FMA flops; HARNESS_BF16_KERNEL=native forces it)",
                Gemm.Bf16KernelName);
        }
        var outer = Gemm.ForceNativeBf16(false);
        Assert.Equal("widened in registers (forced)", Gemm.Bf16KernelName);
        Assert.False(Bf16DotKernel.UseNative(20));
        using (Gemm.ForceNativeBf16(true))
        {
            Assert.True(Bf16DotKernel.UseNative(20));
            Assert.Equal("native vdpbf16ps (forced)", Gemm.Bf16KernelName);
        }
        Assert.False(Bf16DotKernel.UseNative(20));
        outer.Dispose();
        Assert.Equal(EngineSettings.Current.Bf16Native ?? amd, Bf16DotKernel.UseNative(1));
    }

    private static readonly float P127 = BitConverter.UInt32BitsToSingle(0x7F000000), P126 = BitConverter.UInt32BitsToSingle(0x00800000);   // 2^127, 2^-126

    private static ushort B(float f) => (ushort)(BitConverter.SingleToUInt32Bits(f) >> 16);

    [Fact]
    public void The_vdpbf16ps_lane_model_adds_the_odd_product_first_reads_bf16_denormals_as_zero_and_flushes_results()
    {
        // mutants: ReferenceLane's order (odd pair first), DAZ (exponent mask, the sign kept), FTZ (of the incoming
        // accumulator and of each result, and its sign), NaiveProduct's odd-K padding
        static uint Bits(float f) => BitConverter.SingleToUInt32Bits(f);
        Assert.Equal(11.5f, Bf16DotKernel.ReferenceLane(1.5f, B(1f), B(2f), B(4f), B(3f)));
        // 2^24 + 1 rounds to 2^24 (even), then - 1: 16777215; the other order gives 2^24
        Assert.Equal(16777215f, Bf16DotKernel.ReferenceLane(16777216f, B(1f), B(1f), B(-1f), B(1f)));
        Assert.Equal(0f, Bf16DotKernel.ReferenceLane(0f, 0x0001, 0, B(P127), 0));        // x0 denormal: 0, not 2^-6
        Assert.Equal(0f, Bf16DotKernel.ReferenceLane(0f, 0, B(P127), 0, 0x0001));        // w1 denormal
        Assert.Equal(0x80000000u, Bits(Bf16DotKernel.ReferenceLane(-0f, 0x8001, 0x8000, B(1f), B(1f))));   // -denormal reads -0
        Assert.Equal(0u, Bits(Bf16DotKernel.ReferenceLane(0f, B(P126), 0, B(0.5f), 0)));              // 2^-127 flushed
        Assert.Equal(0x80000000u, Bits(Bf16DotKernel.ReferenceLane(0f, B(-P126), 0, B(0.5f), 0)));     // to -0
        Assert.Equal(Bits(P126), Bits(Bf16DotKernel.ReferenceLane(float.Epsilon, 0, B(P126), 0, B(1f))));   // acc flushed first
        Assert.Equal(0x00800000u, Bits(Bf16DotKernel.ReferenceLane(P126, 0, 0, 0, 0)));
        // K = 3: pairs (0, 1) and (2, pad 0)
        var x = Tensor.FromArray(new[] { 1f, 2f, 3f }, 1, 3).To(DType.BFloat16);
        var w = Tensor.FromArray(new[] { 4f, 5f, 6f, -1f, -1f, -1f }, 2, 3).To(DType.BFloat16);
        Assert.Equal(new[] { 32f, -6f }, Bf16DotKernel.NaiveProduct(x, w, 1));
        Assert.Equal(4, Bf16DotKernel.PanelsFor(1));
        Assert.Equal(4, Bf16DotKernel.PanelsFor(2));
        Assert.Equal(4, Bf16DotKernel.PanelsFor(3));
        Assert.Equal(2, Bf16DotKernel.PanelsFor(4));
        Assert.Equal(2, Bf16DotKernel.PanelsFor(7));
        Assert.Equal(1, Bf16DotKernel.PanelsFor(8));
        Assert.Equal(1, Bf16DotKernel.PanelsFor(14));
    }

    [SkippableFact]
    public unsafe void The_emitter_refuses_a_kernel_past_32_registers_and_each_kernel_is_emitted_once()
    {
        // mutants: Emitter.Kernel's limits (mr >= 1, 1 <= np <= 4, 2 * np * (mr + 1) <= 32: 15 x 1, 7 x 2 and 3 x 4 fit
        // exactly) and message, Get's cache
        foreach (var (mr, np) in new[] { (0, 1), (1, 0), (1, 5), (16, 1), (8, 2), (4, 4) })
            Assert.Equal($"bf16 kernel {mr}x{np} panels does not fit 32 zmm registers",
                Assert.Throws<ArgumentException>(() => Bf16DotKernel.Emitter.Kernel(mr, np)).Message);
        foreach (var (mr, np) in new[] { (15, 1), (7, 2), (3, 4), (1, 4) })
            Assert.NotEmpty(Bf16DotKernel.Emitter.Kernel(mr, np));
        Skip.IfNot(Bf16DotKernel.IsSupported, $"native bf16: {Bf16DotKernel.UnsupportedReason}");
        var first = (nint)Bf16DotKernel.Get(3, 4);
        Assert.NotEqual(0, first);
        Assert.Equal(first, (nint)Bf16DotKernel.Get(3, 4));
        Assert.NotEqual(first, (nint)Bf16DotKernel.Get(3, 2));
    }

    [SkippableFact]
    public unsafe void Every_kernel_shape_the_emitter_writes_computes_its_vdpbf16ps_model_from_zero_and_from_c()
    {
        // mutants: the emitter's register numbering (Acc, Breg), its loads, broadcasts, pointer steps and stores, the
        // accumulate branch, NaiveProduct's indices for a second row: each shape is emitted afresh (Get caches the
        // engine's own), placed, and run on packed pairs against the lane model chained over the pairs from 0 or from C
        Skip.IfNot(Bf16DotKernel.IsSupported, $"native bf16: {Bf16DotKernel.UnsupportedReason}");
        const int k = 9, pairs = 5;
        foreach (var (mr, np) in new[] { (1, 4), (2, 4), (3, 4), (4, 2), (7, 2), (8, 1), (14, 1), (15, 1) })
        {
            int n = np * 32, ldc = n + 3;
            var x = Tensor.Uniform(DType.BFloat16, (ulong)(mr * 10 + np), -1f, 1f, mr, k);
            var w = Tensor.Uniform(DType.BFloat16, (ulong)(mr * 10 + np + 1), -1f, 1f, n, k);
            var packed = PackedWeight.Pack(w, GemmKernel.Avx512);   // np panels of 32 columns, pairs * 128 bytes apart
            var a = new uint[pairs * mr];
            var op = GemmOperand.Pin(MatrixView.Of(x), out var handle);
            using (handle)
                fixed (uint* pa = a) PackedGemm.PackPairsA(op, 0, mr, 0, k, mr, pa);
            var kernel = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nint, void*, void*, float*, nint, nint, void>)
                ExecutableMemory.Place(Bf16DotKernel.Emitter.Kernel(mr, np));
            var xs = x.Span<ushort>().ToArray();
            var ws = w.Span<ushort>().ToArray();
            var fromZero = new float[mr * n];
            foreach (bool accumulate in new[] { false, true })
            {
                var start = Tensor.Uniform(DType.Float32, (ulong)(mr + np), -4f, 4f, mr * ldc).Span<float>().ToArray();
                var c = (float[])start.Clone();
                fixed (uint* pa = a)
                fixed (float* pc = c)
                    kernel(pairs, pa, packed.Data, pc, (nint)ldc * 4, accumulate ? 1 : 0);
                for (int r = 0; r < mr; r++)
                {
                    for (int j = 0; j < n; j++)
                    {
                        float acc = accumulate ? start[r * ldc + j] : 0f;
                        for (int p = 0; p < pairs; p++)
                        {
                            ushort x1 = 2 * p + 1 < k ? xs[r * k + 2 * p + 1] : (ushort)0, w1 = 2 * p + 1 < k ? ws[j * k + 2 * p + 1] : (ushort)0;
                            acc = Bf16DotKernel.ReferenceLane(acc, xs[r * k + 2 * p], x1, ws[j * k + 2 * p], w1);
                        }
                        if (!accumulate) fromZero[r * n + j] = acc;
                        Assert.True(BitConverter.SingleToUInt32Bits(acc) == BitConverter.SingleToUInt32Bits(c[r * ldc + j]),
                            $"emitted {mr}x{np} accumulate={accumulate}: C[{r},{j}] = {c[r * ldc + j]:R}, model {acc:R}");
                    }
                    for (int j = n; j < ldc; j++) Assert.Equal(start[r * ldc + j], c[r * ldc + j]);
                }
            }
            AssertBitsEqual(fromZero, Bf16DotKernel.NaiveProduct(x, w, mr), $"NaiveProduct {mr} rows");
            GC.KeepAlive(packed);
        }
    }

    [SkippableFact]
    public void The_self_checks_of_check_kernels_pass_for_every_kernel_and_dtype()
    {
        // mutants: PackedSelfCheck's products (its settings scopes, the compared rows, FirstDifference's loop) reporting a
        // mismatch that is not there, or the native check claiming it did not run
        foreach (var kernel in Gemm.SupportedKernels)
            using (Gemm.ForceKernel(kernel))
                foreach (var dtype in new[] { DType.Float32, DType.BFloat16, DType.Float16 })
                    Assert.Null(PackedSelfCheck.PackedEqualsUnpacked(dtype));
        Assert.Null(PackedSelfCheck.NativeBf16EqualsModel(out bool ran));
        Assert.Equal(Bf16DotKernel.IsSupported, ran);
    }
}
