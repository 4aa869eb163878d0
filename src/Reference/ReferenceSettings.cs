using System.Globalization;
using System.Text.RegularExpressions;
using Harness.Engine.Runtime;

namespace Harness.Reference;

/// <summary>
/// What the reference side takes from outside the process: its environment variables, read ONCE by the host at its
/// boundary (the CLI's entry, a test assembly's initializer) beside <see cref="EngineSettings"/> and handed to
/// <see cref="Configure"/>. Nothing in Harness.Reference reads or sets an environment variable itself
/// (SettingsBoundaryTests reads the assembly's metadata for it); a worker gets what it needs in its own start
/// (<see cref="ReferenceWorker.Device"/>), never through this process's environment. A bad value is an ArgumentException
/// naming the variable, at the boundary (the CLI prints it as one line, exit 2).
/// </summary>
public sealed record ReferenceSettings
{
    public const string PythonVariable = "HARNESS_PYTHON";
    public const string CacheVariable = "HARNESS_CACHE";
    public const string RequireVariable = "HARNESS_REQUIRE_REFERENCE";
    public const string MemoryLimitVariable = "HARNESS_WORKER_MEMORY_MB";
    public const string DeviceVariable = "HARNESS_REFERENCE_DEVICE";

    /// <summary>HARNESS_PYTHON: the reference interpreter (null: the provisioned wrapper under <see cref="CacheDirectory"/>).</summary>
    public string? Python { get; init; }

    /// <summary>HARNESS_CACHE (default ~/.cache/harness): where ci/reference-env.sh writes the reference-python wrapper.</summary>
    public string CacheDirectory { get; init; } = new EngineSettings().CacheDirectory;

    /// <summary>HARNESS_REQUIRE_REFERENCE=1|true: live reference tests must run and fail rather than skip (CI sets it).</summary>
    public bool Required { get; init; }

    /// <summary>HARNESS_WORKER_MEMORY_MB: the cap on a worker's resident memory in MB (0 or unset: no cap).</summary>
    public long WorkerMemoryMb { get; init; }

    /// <summary>
    /// HARNESS_REFERENCE_DEVICE (cpu, cuda, cuda:N, auto): where the reference model runs. Null: not chosen, and
    /// <see cref="DeviceFor"/> follows the engine's device (`--device cuda` puts the reference on the GPU too).
    /// </summary>
    public string? Device { get; init; }

    /// <summary>The reference's device for an engine on <paramref name="engineDevice"/>: the chosen one, else cuda beside a CUDA engine, else cpu.</summary>
    public string DeviceFor(string engineDevice) => Device ?? (engineDevice == "cuda" ? "cuda" : "cpu");

    private static ReferenceSettings _current = new();

    /// <summary>The settings the host configured (defaults until it does).</summary>
    public static ReferenceSettings Current => Volatile.Read(ref _current);

    /// <summary>Sets the process's settings: the host, once, at its boundary (before any worker is made).</summary>
    public static void Configure(ReferenceSettings settings) => Volatile.Write(ref _current, settings ?? throw new ArgumentNullException(nameof(settings)));

    private static readonly Regex Devices = new("^(cpu|auto|cuda(:[0-9]+)?)$", RegexOptions.CultureInvariant);

    /// <summary>
    /// The settings from the host's variables (<paramref name="variable"/>: name to value, null when unset); the
    /// interpreter and the cache folder as <paramref name="engine"/> read them (one reading of HARNESS_PYTHON and HARNESS_CACHE).
    /// </summary>
    public static ReferenceSettings From(Func<string, string?> variable, EngineSettings engine)
    {
        string? Get(string name) => variable(name) is { Length: > 0 } v ? v : null;
        long memory = 0;
        if (Get(MemoryLimitVariable) is { } m && !long.TryParse(m, NumberStyles.None, CultureInfo.InvariantCulture, out memory))
            throw new ArgumentException($"{MemoryLimitVariable}={m} is not a size in MB (a whole number; 0: no cap)");
        var device = Get(DeviceVariable);
        if (device is not null && !Devices.IsMatch(device))
            throw new ArgumentException($"{DeviceVariable}={device} is not a reference device (cpu, cuda, cuda:N or auto)");
        return new ReferenceSettings
        {
            Python = engine.ReferencePython,
            CacheDirectory = engine.CacheDirectory,
            Required = Get(RequireVariable) is "1" or "true",
            WorkerMemoryMb = memory,
            Device = device,
        };
    }
}
