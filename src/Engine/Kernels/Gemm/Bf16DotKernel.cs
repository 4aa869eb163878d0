using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>
/// Native bfloat16 micro-kernels on the AVX-512 BF16 dot product <c>vdpbf16ps</c>, emitted as machine code at run time.
/// <para><b>Why emitted code.</b> .NET 10 has no intrinsic for vdpbf16ps (no Avx512Bf16 class; Avx10v1/v2 are not
/// reported on this Zen 5), and a build-time native library would need a C compiler on every build host and a
/// prebuilt binary in the self-contained GPU bundle. So the kernel is encoded here (a dozen instruction forms, see
/// <see cref="Emitter"/>), copied into an anonymous mapping that is then made read+execute (mmap/mprotect through libc),
/// and called through a <c>delegate* unmanaged</c> pointer. The same bytes run in the trimmed bundle; nothing is
/// linked. Supported only on x86-64 Linux with AVX-512F and AVX512_BF16 (CPUID leaf 7 subleaf 1, EAX bit 5);
/// elsewhere <see cref="UnsupportedReason"/> says why and callers use the widening path. Where it runs, <see cref="UseNative"/>
/// says whether it is used (it is slower than widening on Intel's cores for large M).</para>
/// <para><b>Contract</b> of a kernel with MR rows and NP panels of 32 columns (<c>kernel(pairs, a, b, c, ldcBytes, accumulate)</c>,
/// SysV ABI: rdi, rsi, rdx, rcx, r8, r9):</para>
/// <list type="bullet">
/// <item>a: packed A, for each k pair p (p = 0..pairs-1) MR dwords; dword r holds row r's bf16 pair (x[r][2p] low half,
/// x[r][2p+1] high half).</item>
/// <item>b: packed B panel q at b + q * pairs * 128 bytes (NP &gt; 1 only when the panels hold all of K); in a panel, for
/// each pair p, 32 dwords (128 bytes): dword j holds (W[j][2p], W[j][2p+1]), column j of the panel.</item>
/// <item>c: float32, row r at c + r * ldcBytes, panel q's columns at +q*128 bytes; accumulate != 0 continues from C's
/// values, else starts from zero.</item>
/// </list>
/// The naive computation it equals, per element (r, j): for p ascending,
/// <c>acc = vdpbf16ps_lane(acc, x[r][2p], x[r][2p+1], w[j][2p], w[j][2p+1])</c> (<see cref="ReferenceLane"/>: the
/// odd product added first, then the even one, each add rounded to nearest even, bf16 denormals read as zero and fp32
/// denormal results flushed to zero, as Intel's pseudo-code for VDPBF16PS states). Lanes never mix, so an element's bits
/// depend on K only (not on M, the tile or the thread): the native path is deterministic for a shape and equal across M.
/// </summary>
internal static unsafe class Bf16DotKernel
{
    /// <summary>Columns per panel: one zmm holds 16 fp32 lanes, two of them per pair step.</summary>
    public const int NR = 32;

    /// <summary>Rows of the blocked path's register tile: 14 x 2 accumulators + 2 B registers of 32 zmm.</summary>
    public const int MR = 14;

    private static readonly Lazy<string?> _unsupported = new(DetectUnsupported);

    /// <summary>Null when the native kernels run here; otherwise why not (the widening fp32 path is used instead).</summary>
    public static string? UnsupportedReason => _unsupported.Value;

    public static bool IsSupported => UnsupportedReason is null;

    private static string? DetectUnsupported()
    {
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64 || !OperatingSystem.IsLinux())
            return $"the native bf16 kernel is emitted for x86-64 Linux only (this is {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture})";
        if (!Avx512F.IsSupported) return "the CPU (or the OS) has no AVX-512F";
        if (!X86Base.IsSupported) return "CPUID is not available";
        var (eax, _, _, _) = X86Base.CpuId(7, 1);
        if ((eax & (1 << 5)) == 0) return "the CPU lacks AVX512_BF16 (CPUID.(EAX=7,ECX=1):EAX bit 5 is clear)";
        return null;
    }

    private static readonly AsyncLocal<bool?> _forced = new();
    /// <summary>HARNESS_BF16_KERNEL's value (null: auto); read by the host (<see cref="Runtime.EngineSettings"/>).</summary>
    internal static bool? Parse(string? value) => value switch
    {
        null or "" or "auto" => null,
        "widen" => false,
        "native" when IsSupported => true,
        "native" => throw new NotSupportedException($"HARNESS_BF16_KERNEL=native: {UnsupportedReason}"),
        _ => throw new ArgumentException($"HARNESS_BF16_KERNEL={value} is not a bf16 kernel; known: auto, native, widen"),
    };

    /// <summary>
    /// Whether a normal-mode bf16 product of <paramref name="m"/> rows uses the native kernel: forced (tests, bench) or
    /// HARNESS_BF16_KERNEL=native|widen first; by default (deterministic, never timed at run time) on AMD cores, where
    /// Zen 4/5 run vdpbf16ps at the FMA's instruction rate, so twice the float32 flops. Intel's Sapphire/Emerald Rapids run
    /// it on one port, half the FMA flops (measured on this machine, an Emerald Rapids VM: 88 against 172 GFLOP/s per core
    /// for the 14x32 tiles, and no gain at M &lt;= 8 where W's bytes bound both), so there the bf16 panels are widened in
    /// registers (a shift or an and per 16 FMAs), reading the same bf16 bytes. <paramref name="m"/> is kept for a
    /// per-M rule; none is needed on the CPUs measured.
    /// </summary>
    public static bool UseNative(int m)
    {
        if ((_forced.Value ?? Runtime.EngineSettings.Current.Bf16Native) is bool chosen) return chosen;
        return IsSupported && _vendorIsAmd.Value;
    }

    private static readonly Lazy<bool> _vendorIsAmd = new(() =>
    {
        var (_, ebx, _, _) = X86Base.CpuId(0, 0);
        return ebx == 0x68747541; // "Auth" (AuthenticAMD)
    });

    /// <summary>How bf16 products pick their kernel now, in words (for the bench).</summary>
    public static string Describe() =>
        (_forced.Value ?? Runtime.EngineSettings.Current.Bf16Native) is bool chosen ? (chosen ? "native vdpbf16ps (forced)" : "widened in registers (forced)")
        : !IsSupported ? $"widened in registers (native vdpbf16ps unavailable: {UnsupportedReason})"
        : _vendorIsAmd.Value ? "native vdpbf16ps (AMD core)"
        : "bf16 panels widened in registers (Intel core: vdpbf16ps runs at half the FMA flops; HARNESS_BF16_KERNEL=native forces it)";

    /// <summary>Forces the native kernel on or off for the current flow until disposed (tests and the bench); on needs support.</summary>
    public static IDisposable Force(bool native)
    {
        if (native && !IsSupported) throw new NotSupportedException($"native bf16 kernel unavailable: {UnsupportedReason}");
        var previous = _forced.Value;
        _forced.Value = native;
        return new Restore(previous);
    }

    private sealed class Restore(bool? previous) : IDisposable
    {
        public void Dispose() => _forced.Value = previous;
    }

    /// <summary>One emitted kernel: MR rows x NP panels of 32 columns.</summary>
    public static delegate* unmanaged[Cdecl, SuppressGCTransition]<nint, void*, void*, float*, nint, nint, void> Get(int mr, int np)
    {
        if (UnsupportedReason is { } why) throw new NotSupportedException($"native bf16 kernel unavailable: {why}");
        lock (_kernels)
        {
            if (!_kernels.TryGetValue((mr, np), out var p))
            {
                p = (nint)ExecutableMemory.Place(Emitter.Kernel(mr, np));
                _kernels[(mr, np)] = p;
            }
            return (delegate* unmanaged[Cdecl, SuppressGCTransition]<nint, void*, void*, float*, nint, nint, void>)p;
        }
    }

    private static readonly Dictionary<(int, int), nint> _kernels = [];

    /// <summary>Panels per call of the small-M streaming kernel with <paramref name="rows"/> rows (accumulators + B registers &lt;= 32).</summary>
    public static int PanelsFor(int rows) => rows switch { 1 => 4, 2 or 3 => 4, <= 7 => 2, _ => 1 };

    /// <summary>The scalar model of one lane of vdpbf16ps (Intel SDM, VDPBF16PS: DAZ, FTZ, RNE, odd pair first).</summary>
    public static float ReferenceLane(float acc, ushort x0, ushort x1, ushort w0, ushort w1)
    {
        static float Daz(ushort h) => (h & 0x7F80) == 0 ? BitConverter.UInt32BitsToSingle((uint)(h & 0x8000) << 16) : BitConverter.UInt32BitsToSingle((uint)h << 16);
        static float Ftz(float f) => float.IsSubnormal(f) ? (f < 0 ? -0f : 0f) : f;
        acc = Ftz(acc);
        acc = Ftz(MathF.FusedMultiplyAdd(Daz(x1), Daz(w1), acc));
        return Ftz(MathF.FusedMultiplyAdd(Daz(x0), Daz(w0), acc));
    }

    /// <summary>
    /// The naive computation the native kernel equals bit for bit: C[m, n] = x[:m] W^T with every element one
    /// <see cref="ReferenceLane"/> chain over the k pairs ascending, from zero (an odd K's last pair padded with 0).
    /// x [>= m, K] and W [N, K] contiguous bf16.
    /// </summary>
    public static float[] NaiveProduct(Tensors.Tensor x, Tensors.Tensor w, int m)
    {
        int n = w.Shape[0], k = w.Shape[1];
        var xs = x.Span<ushort>();
        var ws = w.Span<ushort>();
        var c = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float acc = 0;
                for (int p = 0; p < k; p += 2)
                {
                    ushort x1 = p + 1 < k ? xs[i * k + p + 1] : (ushort)0, w1 = p + 1 < k ? ws[j * k + p + 1] : (ushort)0;
                    acc = ReferenceLane(acc, xs[i * k + p], x1, ws[j * k + p], w1);
                }
                c[i * n + j] = acc;
            }
        return c;
    }

    /// <summary>
    /// The x86-64 encoder: only the forms the kernel uses. The kernel (MR rows, NP panels; acc(r,q,h) = zmm[r*2NP + 2q + h],
    /// B(q,h) = zmm[2NP*MR + 2q + h]; r11 = panel stride, rax = 3 * stride):
    /// <code>
    ///         mov   r11, rdi ; shl r11, 7 ; lea rax, [r11 + r11*2]     ; panel stride = pairs * 128 bytes
    ///         test  r9, r9 ; jz .zero
    ///         mov   r10, rcx
    ///         (for r) (for q,h) vmovups acc(r,q,h), [r10 + q*128 + h*64] ; add r10, r8
    ///         jmp   .start
    /// .zero:  (for each acc) vpxord acc, acc, acc
    /// .start: test  rdi, rdi ; jz .store
    /// .loop:  (for q,h) vmovups B(q,h), [rdx + off(q) + h*64]          ; off(q) = 0, r11, r11*2, rax
    ///         (for r) (for q,h) vdpbf16ps acc(r,q,h), B(q,h), dword ptr [rsi + 4r]{1to16}
    ///         add   rsi, 4*MR ; add rdx, 128 ; dec rdi ; jnz .loop
    /// .store: (for r) (for q,h) vmovups [rcx + q*128 + h*64], acc(r,q,h) ; add rcx, r8
    ///         vzeroupper ; ret
    /// </code>
    /// Memory operands always use a 32-bit displacement (never EVEX's compressed disp8), so no scaling rule applies.
    /// </summary>
    internal static class Emitter
    {
        public static byte[] Kernel(int mr, int np)
        {
            if (mr < 1 || np < 1 || np > 4 || 2 * np * (mr + 1) > 32)
                throw new ArgumentException($"bf16 kernel {mr}x{np} panels does not fit 32 zmm registers");
            var e = new List<byte>(4096);
            int Acc(int r, int q, int h) => r * 2 * np + 2 * q + h;
            int Breg(int q, int h) => 2 * np * mr + 2 * q + h;
            const int Rax = 0, Rcx = 1, Rdx = 2, Rsi = 6, R8 = 8, R10 = 10, R11 = 11;

            e.AddRange([0x49, 0x89, 0xFB]);             // mov r11, rdi
            e.AddRange([0x49, 0xC1, 0xE3, 0x07]);       // shl r11, 7
            e.AddRange([0x4B, 0x8D, 0x04, 0x5B]);       // lea rax, [r11 + r11*2]
            e.AddRange([0x4D, 0x85, 0xC9]);             // test r9, r9
            int jzZero = Jcc(e, 0x84);
            e.AddRange([0x49, 0x89, 0xCA]);             // mov r10, rcx
            for (int r = 0; r < mr; r++)
            {
                for (int q = 0; q < np; q++)
                    for (int h = 0; h < 2; h++) Evex(e, pp: 0, mm: 1, op: 0x10, reg: Acc(r, q, h), vvvv: 0, bcast: false, baseReg: R10, index: -1, scale: 0, disp: q * 128 + h * 64);
                e.AddRange([0x4D, 0x01, 0xC2]);         // add r10, r8
            }
            e.Add(0xE9); int jmpStart = e.Count; e.AddRange([0, 0, 0, 0]); // jmp .start
            Patch(e, jzZero, e.Count);
            for (int r = 0; r < mr; r++)                // .zero
                for (int q = 0; q < np; q++)
                    for (int h = 0; h < 2; h++) EvexRR(e, pp: 1, mm: 1, op: 0xEF, reg: Acc(r, q, h), vvvv: Acc(r, q, h), rm: Acc(r, q, h));
            Patch(e, jmpStart, e.Count);
            e.AddRange([0x48, 0x85, 0xFF]);             // .start: test rdi, rdi
            int jzStore = Jcc(e, 0x84);
            int loop = e.Count;
            for (int q = 0; q < np; q++)
                for (int h = 0; h < 2; h++)
                {
                    var (index, scale) = q switch { 0 => (-1, 0), 1 => (R11, 0), 2 => (R11, 1), _ => (Rax, 0) };
                    Evex(e, pp: 0, mm: 1, op: 0x10, reg: Breg(q, h), vvvv: 0, bcast: false, baseReg: Rdx, index: index, scale: scale, disp: h * 64);
                }
            for (int r = 0; r < mr; r++)
                for (int q = 0; q < np; q++)
                    for (int h = 0; h < 2; h++)
                        Evex(e, pp: 2, mm: 2, op: 0x52, reg: Acc(r, q, h), vvvv: Breg(q, h), bcast: true, baseReg: Rsi, index: -1, scale: 0, disp: 4 * r);
            e.AddRange([0x48, 0x81, 0xC6]); Imm32(e, 4 * mr);   // add rsi, 4*MR
            e.AddRange([0x48, 0x81, 0xC2]); Imm32(e, 128);      // add rdx, 128
            e.AddRange([0x48, 0xFF, 0xCF]);                     // dec rdi
            e.AddRange([0x0F, 0x85]); Imm32(e, loop - (e.Count + 4)); // jnz .loop
            Patch(e, jzStore, e.Count);
            for (int r = 0; r < mr; r++)                        // .store
            {
                for (int q = 0; q < np; q++)
                    for (int h = 0; h < 2; h++) Evex(e, pp: 0, mm: 1, op: 0x11, reg: Acc(r, q, h), vvvv: 0, bcast: false, baseReg: Rcx, index: -1, scale: 0, disp: q * 128 + h * 64);
                e.AddRange([0x4C, 0x01, 0xC1]);                 // add rcx, r8
            }
            e.AddRange([0xC5, 0xF8, 0x77]);                     // vzeroupper
            e.Add(0xC3);                                        // ret
            _ = R8;
            return e.ToArray();
        }

        private static int Jcc(List<byte> e, byte cc)
        {
            e.AddRange([0x0F, cc, 0, 0, 0, 0]);
            return e.Count - 4;
        }

        private static void Patch(List<byte> e, int at, int target)
        {
            int rel = target - (at + 4);
            for (int i = 0; i < 4; i++) e[at + i] = (byte)(rel >> (8 * i));
        }

        private static void Imm32(List<byte> e, int v)
        {
            for (int i = 0; i < 4; i++) e.Add((byte)(v >> (8 * i)));
        }

        /// <summary>EVEX.512 prefix (W0, no mask): P0 = ~R ~X ~B ~R' 00 mm; P1 = W ~vvvv 1 pp; P2 = z L'L b ~V' aaa.</summary>
        private static void Prefix(List<byte> e, int pp, int mm, int reg, int x, int b, int vvvv, bool bcast)
        {
            e.Add(0x62);
            e.Add((byte)(((~reg >> 3) & 1) << 7 | ((~x) & 1) << 6 | ((~b) & 1) << 5 | ((~reg >> 4) & 1) << 4 | mm));
            e.Add((byte)(((~vvvv) & 0xF) << 3 | 1 << 2 | pp));
            e.Add((byte)(0b10 << 5 | (bcast ? 1 : 0) << 4 | ((~vvvv >> 4) & 1) << 3));
        }

        /// <summary>op zmm(reg), zmm(vvvv), [base + index*2^scale + disp32] (index -1: none).</summary>
        private static void Evex(List<byte> e, int pp, int mm, byte op, int reg, int vvvv, bool bcast, int baseReg, int index, int scale, int disp)
        {
            Prefix(e, pp, mm, reg, index < 0 ? 0 : index >> 3, baseReg >> 3, vvvv, bcast);
            e.Add(op);
            if (index < 0 && (baseReg & 7) != 4)
            {
                e.Add((byte)(0b10 << 6 | (reg & 7) << 3 | (baseReg & 7)));
            }
            else
            {
                e.Add((byte)(0b10 << 6 | (reg & 7) << 3 | 0b100));
                e.Add((byte)(scale << 6 | ((index < 0 ? 4 : index) & 7) << 3 | (baseReg & 7)));
            }
            Imm32(e, disp);
        }

        /// <summary>op zmm(reg), zmm(vvvv), zmm(rm): register form (EVEX.X extends rm to 32 registers).</summary>
        private static void EvexRR(List<byte> e, int pp, int mm, byte op, int reg, int vvvv, int rm)
        {
            Prefix(e, pp, mm, reg, rm >> 4, rm >> 3, vvvv, bcast: false);
            e.Add(op);
            e.Add((byte)(0b11 << 6 | (reg & 7) << 3 | (rm & 7)));
        }
    }
}

/// <summary>
/// Read+execute copies of emitted code (Linux x86-64): mmap an anonymous read+write mapping, copy, mprotect to
/// read+execute (never writable and executable at once). Mappings live for the process (a few kernels of ~2 KiB).
/// </summary>
internal static unsafe class ExecutableMemory
{
    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 2, MapAnonymous = 0x20;

    [DllImport("libc", SetLastError = true)] private static extern void* mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);
    [DllImport("libc", SetLastError = true)] private static extern int mprotect(void* addr, nuint length, int prot);

    public static void* Place(byte[] code)
    {
        nuint length = (nuint)((code.Length + 4095) & ~4095);
        void* p = mmap(null, length, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (p == (void*)-1) throw new InvalidOperationException($"mmap of {length} bytes for the bf16 kernel failed (errno {Marshal.GetLastPInvokeError()})");
        code.CopyTo(new Span<byte>(p, code.Length));
        if (mprotect(p, length, ProtRead | ProtExec) != 0)
            throw new InvalidOperationException($"mprotect(PROT_READ|PROT_EXEC) of the bf16 kernel failed (errno {Marshal.GetLastPInvokeError()})");
        return p;
    }
}
