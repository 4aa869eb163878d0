using System.Runtime.InteropServices;
using System.Text;

namespace Harness.Engine.Cuda.Interop;

/// <summary>libnvrtc: compiles CUDA C++ source to a cubin for the device's architecture at run time.</summary>
public static unsafe class Nvrtc
{
    private const string Lib = CudaLibraries.Rtc;

    [DllImport(Lib)] private static extern int nvrtcVersion(int* major, int* minor);
    [DllImport(Lib)] private static extern int nvrtcCreateProgram(nint* prog, byte* src, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [DllImport(Lib)] private static extern int nvrtcCompileProgram(nint prog, int numOptions, byte** options);
    [DllImport(Lib)] private static extern int nvrtcGetProgramLogSize(nint prog, nuint* size);
    [DllImport(Lib)] private static extern int nvrtcGetProgramLog(nint prog, byte* log);
    [DllImport(Lib)] private static extern int nvrtcGetCUBINSize(nint prog, nuint* size);
    [DllImport(Lib)] private static extern int nvrtcGetCUBIN(nint prog, byte* cubin);
    [DllImport(Lib)] private static extern int nvrtcDestroyProgram(nint* prog);
    [DllImport(Lib)] private static extern nint nvrtcGetErrorString(int result);

    public static void Check(int rc, string call)
    {
        if (rc != 0)
            throw new CudaException(call, rc, "NVRTC_ERROR", Marshal.PtrToStringAnsi(nvrtcGetErrorString(rc)) ?? "?");
    }

    public static string Version()
    {
        int major, minor;
        Check(nvrtcVersion(&major, &minor), "nvrtcVersion");
        return $"{major}.{minor}";
    }

    /// <summary>Compiles <paramref name="source"/> for sm_{arch}; a compile error throws with NVRTC's log.</summary>
    public static byte[] CompileToCubin(string source, string name, int arch, IReadOnlyList<string> extraOptions)
    {
        nint prog;
        var src = Encoding.UTF8.GetBytes(source + "\0");
        var nm = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* ps = src, pn = nm) Check(nvrtcCreateProgram(&prog, ps, pn, 0, null, null), $"nvrtcCreateProgram({name})");
        try
        {
            var options = new List<string> { $"--gpu-architecture=sm_{arch}", "--std=c++17", "-default-device" };
            options.AddRange(extraOptions);
            var handles = options.Select(o => GCHandle.Alloc(Encoding.UTF8.GetBytes(o + "\0"), GCHandleType.Pinned)).ToArray();
            try
            {
                var ptrs = stackalloc byte*[handles.Length];
                for (int i = 0; i < handles.Length; i++) ptrs[i] = (byte*)handles[i].AddrOfPinnedObject();
                int rc = nvrtcCompileProgram(prog, handles.Length, ptrs);
                if (rc != 0)
                {
                    nuint size;
                    nvrtcGetProgramLogSize(prog, &size);
                    var log = new byte[(int)size + 1];
                    fixed (byte* pl = log) nvrtcGetProgramLog(prog, pl);
                    throw new CudaException($"nvrtcCompileProgram({name}, {string.Join(" ", options)})", rc, "NVRTC_ERROR_COMPILATION",
                        Encoding.UTF8.GetString(log).TrimEnd('\0'));
                }
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
            nuint cubinSize;
            Check(nvrtcGetCUBINSize(prog, &cubinSize), $"nvrtcGetCUBINSize({name})");
            var cubin = new byte[(int)cubinSize];
            fixed (byte* pc = cubin) Check(nvrtcGetCUBIN(prog, pc), $"nvrtcGetCUBIN({name})");
            return cubin;
        }
        finally
        {
            nvrtcDestroyProgram(&prog);
        }
    }
}
