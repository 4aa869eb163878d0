using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using Harness.Engine.Kernels.Gemm;

namespace Harness.Reports;

/// <summary>
/// Where a report was produced: the engine's version (its assembly's informational version), the reference side's
/// python/torch/transformers versions ("n/a" when the reference was not started), the OS, the CPU model (from
/// /proc/cpuinfo where readable, else the architecture), the processor count and the GEMM micro-kernel in use.
/// </summary>
public sealed record ReportEnvironment(
    string EngineVersion,
    string PythonVersion,
    string TorchVersion,
    string TransformersVersion,
    string Os,
    string CpuModel,
    int ProcessorCount,
    string GemmKernel)
{
    /// <summary>The placeholder for a version that is not known.</summary>
    public const string NotAvailable = "n/a";

    /// <summary>This process's environment, with the reference versions as given (they come from the worker's handshake).</summary>
    public static ReportEnvironment Capture(string python = NotAvailable, string torch = NotAvailable, string transformers = NotAvailable) =>
        new(EngineVersionOf(typeof(Gemm).Assembly), python, torch, transformers, RuntimeInformation.OSDescription,
            ReadCpuModel() ?? RuntimeInformation.ProcessArchitecture.ToString(), Environment.ProcessorCount, Gemm.KernelName);

    /// <summary>The assembly's informational version (e.g. "1.0.0+3f2c1ab"), else its version, else "n/a".</summary>
    public static string EngineVersionOf(Assembly assembly)
    {
        ArgumentNullException.ThrowIfNull(assembly);
        return assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? assembly.GetName().Version?.ToString()
            ?? NotAvailable;
    }

    /// <summary>The first "model name" line of /proc/cpuinfo, or null where there is none or it cannot be read.</summary>
    public static string? ReadCpuModel(string path = "/proc/cpuinfo")
    {
        try
        {
            if (!File.Exists(path)) return null;
            foreach (var line in File.ReadLines(path))
            {
                int colon = line.IndexOf(':', StringComparison.Ordinal);
                if (colon > 0 && line[..colon].Trim().Equals("model name", StringComparison.OrdinalIgnoreCase))
                    return line[(colon + 1)..].Trim();
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>One line for headers and logs.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"engine {EngineVersion}; python {PythonVersion}, torch {TorchVersion}, transformers {TransformersVersion}; {Os}; {CpuModel} x{ProcessorCount}; GEMM {GemmKernel}");
}
