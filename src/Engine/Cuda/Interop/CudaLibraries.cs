using System.Reflection;
using System.Runtime.InteropServices;

namespace Harness.Engine.Cuda.Interop;

/// <summary>
/// Finds the CUDA libraries at run time. Nothing is linked at build time: the engine runs on machines with no GPU, and on a
/// GPU machine the libraries usually come from a Python venv (pip's nvidia-* wheels), not from a system CUDA install.
/// <para>Search order for each library (first hit wins):</para>
/// <list type="number">
/// <item>HARNESS_CUDA_LIB_DIR (colon-separated folders);</item>
/// <item>the nvidia wheels of HARNESS_PYTHON's venv and of /opt/torch/.venv: site-packages/nvidia/{cu13,cu12}/lib and
/// site-packages/nvidia/{cuda_runtime,cublas,cuda_nvrtc}/lib;</item>
/// <item>CUDA_HOME/lib64, CUDA_PATH/lib64, /usr/local/cuda/lib64, /usr/local/nvidia/lib64, /usr/lib/x86_64-linux-gnu;</item>
/// <item>the system loader (LD_LIBRARY_PATH, ld.so.cache) by bare file name.</item>
/// </list>
/// A library that is found nowhere throws <see cref="CudaUnavailableException"/> naming every path tried.
/// The P/Invoke declarations use the logical names below ("harness-cudart", ...); one resolver maps them to the loaded handles.
/// </summary>
public static class CudaLibraries
{
    public const string Runtime = "harness-cudart";
    public const string Driver = "harness-cuda";
    public const string Blas = "harness-cublas";
    public const string BlasLt = "harness-cublaslt";
    public const string Rtc = "harness-nvrtc";

    private static readonly Dictionary<string, string[]> FileNames = new()
    {
        [Runtime] = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"],
        [Driver] = ["libcuda.so.1", "libcuda.so"],
        [Blas] = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"],
        [BlasLt] = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
        [Rtc] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
    };

    private static readonly Dictionary<string, nint> Handles = new();
    private static readonly Dictionary<string, string> Paths = new();
    private static readonly object Gate = new();
    private static int _resolverSet;

    /// <summary>Where each loaded library came from (for reports).</summary>
    public static IReadOnlyDictionary<string, string> LoadedFrom
    {
        get { lock (Gate) return new Dictionary<string, string>(Paths); }
    }

    /// <summary>Loads every library the engine uses (cuBLAS before cuBLASLt's dependents); throws naming what was searched.</summary>
    public static void LoadAll()
    {
        // cublasLt first: libcublas needs it, and the loader only finds it by itself when both sit in one folder on its path.
        foreach (var name in new[] { Driver, Runtime, BlasLt, Blas, Rtc }) Load(name);
    }

    /// <summary>The handle of one library (logical name), loading it on first use.</summary>
    public static nint Load(string logicalName)
    {
        EnsureResolver();
        lock (Gate)
        {
            if (Handles.TryGetValue(logicalName, out var h)) return h;
            var tried = new List<string>();
            foreach (var dir in SearchDirectories())
                foreach (var file in FileNames[logicalName])
                {
                    var path = Path.Combine(dir, file);
                    if (!File.Exists(path)) { tried.Add(path); continue; }
                    if (NativeLibrary.TryLoad(path, out h)) return Remember(logicalName, h, path);
                    tried.Add(path + " (exists, failed to load)");
                }
            foreach (var file in FileNames[logicalName])
            {
                if (NativeLibrary.TryLoad(file, out h)) return Remember(logicalName, h, file + " (system loader)");
                tried.Add(file + " (system loader, LD_LIBRARY_PATH=" + Harness.Engine.Runtime.EngineSettings.Current.LibraryPath + ")");
            }
            throw new CudaUnavailableException(
                $"{FileNames[logicalName][0]} was not found; searched: {string.Join(", ", tried.Distinct())}. " +
                "Set HARNESS_CUDA_LIB_DIR to the folder that holds it (e.g. a venv's site-packages/nvidia/cu13/lib).");
        }
    }

    private static nint Remember(string name, nint handle, string path)
    {
        Handles[name] = handle;
        Paths[name] = path;
        return handle;
    }

    /// <summary>The folders searched, in order (see the class summary).</summary>
    public static IEnumerable<string> SearchDirectories()
    {
        var dirs = new List<string>();
        var settings = Harness.Engine.Runtime.EngineSettings.Current;                             // the host's HARNESS_CUDA_LIB_DIR, HARNESS_PYTHON, CUDA_HOME/CUDA_PATH
        dirs.AddRange(settings.CudaLibraryDirectories);
        var venvs = new List<string>();
        var python = settings.ReferencePython;
        if (!string.IsNullOrEmpty(python))
        {
            var bin = Path.GetDirectoryName(python);
            if (bin is not null && Path.GetDirectoryName(bin) is { } venv) venvs.Add(venv);
        }
        venvs.Add("/opt/torch/.venv");
        foreach (var venv in venvs)
        {
            var lib = Path.Combine(venv, "lib");
            if (!Directory.Exists(lib)) continue;
            foreach (var py in Directory.GetDirectories(lib, "python3*").Order(StringComparer.Ordinal))
            {
                var nv = Path.Combine(py, "site-packages", "nvidia");
                foreach (var sub in new[] { "cu13", "cu12", "cuda_runtime", "cublas", "cuda_nvrtc" })
                    dirs.Add(Path.Combine(nv, sub, "lib"));
            }
        }
        foreach (var root in settings.CudaRoots) dirs.Add(Path.Combine(root, "lib64"));
        dirs.AddRange(["/usr/local/cuda/lib64", "/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"]);
        return dirs.Distinct();
    }

    private static void EnsureResolver()
    {
        if (Interlocked.Exchange(ref _resolverSet, 1) == 1) return;
        NativeLibrary.SetDllImportResolver(typeof(CudaLibraries).Assembly, Resolve);
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        FileNames.ContainsKey(libraryName) ? Load(libraryName) : 0;
}

/// <summary>No usable GPU: a library is missing, no device is visible, or the driver refuses. The message says which.</summary>
public sealed class CudaUnavailableException(string message) : Exception(message);

/// <summary>A CUDA, cuBLAS or NVRTC call returned an error: the message names the call, the code and the library's error string.</summary>
public sealed class CudaException(string call, int code, string name, string description)
    : Exception($"{call} failed: {name} ({code}): {description}")
{
    public string Call { get; } = call;
    public int Code { get; } = code;
    public string ErrorName { get; } = name;
}
