using Harness.Engine.Kernels.Gemm;

namespace Harness.Engine.Runtime;

/// <summary>
/// What the engine takes from outside the process: its environment variables, read ONCE by the host at its boundary (the
/// CLI's entry, a test assembly's initializer) and handed to <see cref="Configure"/>. No engine code reads an environment
/// variable itself (EngineSettingsTests greps src/Engine for it). A bad value is an ArgumentException naming the variable,
/// at the boundary (the CLI prints it as one line, exit 2), not a type initializer's exception at the first GEMM.
/// </summary>
public sealed record EngineSettings
{
    /// <summary>HARNESS_BATCH_INVARIANT=1|true: batch-invariant mode by default (<see cref="ComputeSettings.BatchInvariant"/>).</summary>
    public bool BatchInvariant { get; init; }

    /// <summary>HARNESS_THREADS: kernel worker threads (default: the processor count).</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>HARNESS_GEMM_KERNEL=scalar|avx2|avx512|auto: the GEMM micro-kernel for the whole process (null: the CPU's best).</summary>
    public GemmKernel? GemmKernel { get; init; }

    /// <summary>HARNESS_BF16_KERNEL=native|widen|auto: the bf16 product kernel (null: by CPU vendor).</summary>
    public bool? Bf16Native { get; init; }

    /// <summary>HARNESS_CUDA_SYNC=1: synchronize after every CUDA launch so an asynchronous fault names its kernel.</summary>
    public bool CudaSyncEachLaunch { get; init; }

    /// <summary>HARNESS_CACHE (default ~/.cache/harness): where compiled CUDA kernels are kept (its cuda-kernels folder).</summary>
    public string CacheDirectory { get; init; } = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "harness");

    /// <summary>HARNESS_CUDA_LIB_DIR (':'-separated): folders searched first for the CUDA libraries.</summary>
    public IReadOnlyList<string> CudaLibraryDirectories { get; init; } = [];

    /// <summary>HARNESS_PYTHON: the reference interpreter; its venv's nvidia wheels are searched for the CUDA libraries.</summary>
    public string? ReferencePython { get; init; }

    /// <summary>CUDA_HOME, CUDA_PATH: CUDA toolkits whose lib64 is searched.</summary>
    public IReadOnlyList<string> CudaRoots { get; init; } = [];

    /// <summary>LD_LIBRARY_PATH as the process started (only named in the library search's message).</summary>
    public string LibraryPath { get; init; } = "";

    private static EngineSettings _current = new();

    /// <summary>The settings the host configured (defaults until it does).</summary>
    public static EngineSettings Current => Volatile.Read(ref _current);

    /// <summary>Sets the process's settings: the host, once, at its boundary.</summary>
    public static void Configure(EngineSettings settings) => Volatile.Write(ref _current, settings ?? throw new ArgumentNullException(nameof(settings)));

    /// <summary>The settings from the host's variables (<paramref name="variable"/>: name to value, null when unset).</summary>
    public static EngineSettings From(Func<string, string?> variable)
    {
        var defaults = new EngineSettings();
        string? Get(string name) => variable(name) is { Length: > 0 } v ? v : null;
        int threads = defaults.Threads;
        if (Get("HARNESS_THREADS") is { } t && (!int.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out threads) || threads < 1))
            throw new ArgumentException($"HARNESS_THREADS={t} is not a thread count (a whole number, at least 1)");
        return new EngineSettings
        {
            BatchInvariant = Get("HARNESS_BATCH_INVARIANT") is "1" or "true",
            Threads = threads,
            GemmKernel = GemmKernelSelector.Parse(Get("HARNESS_GEMM_KERNEL")),
            Bf16Native = Bf16DotKernel.Parse(Get("HARNESS_BF16_KERNEL")),
            CudaSyncEachLaunch = Get("HARNESS_CUDA_SYNC") is "1",
            CacheDirectory = Get("HARNESS_CACHE") ?? defaults.CacheDirectory,
            CudaLibraryDirectories = (Get("HARNESS_CUDA_LIB_DIR") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries),
            ReferencePython = Get("HARNESS_PYTHON"),
            CudaRoots = new[] { "CUDA_HOME", "CUDA_PATH" }.Select(Get).OfType<string>().ToList(),
            LibraryPath = Get("LD_LIBRARY_PATH") ?? "",
        };
    }
}
