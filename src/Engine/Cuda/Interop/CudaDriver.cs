using System.Runtime.InteropServices;
using System.Text;

namespace Harness.Engine.Cuda.Interop;

/// <summary>
/// libcuda (the driver API), only for what the runtime API lacks: loading NVRTC's cubins as modules and launching their
/// kernels with an argument array. The runtime's primary context is the one used (cudaSetDevice makes it current).
/// </summary>
public static unsafe class CudaDriver
{
    private const string Lib = CudaLibraries.Driver;

    [DllImport(Lib)] private static extern int cuInit(uint flags);
    [DllImport(Lib)] private static extern int cuDeviceGetName(byte* name, int len, int device);
    [DllImport(Lib)] private static extern int cuModuleLoadData(nint* module, void* image);
    [DllImport(Lib)] private static extern int cuModuleGetFunction(nint* function, nint module, byte* name);
    [DllImport(Lib)] private static extern int cuFuncSetAttribute(nint function, int attribute, int value);
    [DllImport(Lib)]
    private static extern int cuLaunchKernel(nint f, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedBytes, nint stream, void** args, void** extra);
    [DllImport(Lib)] private static extern int cuGetErrorString(int error, nint* text);
    [DllImport(Lib)] private static extern int cuGetErrorName(int error, nint* text);

    public const int FuncAttributeMaxDynamicSharedSizeBytes = 8;

    public static void Check(int rc, string call)
    {
        if (rc == 0) return;
        nint name = 0, text = 0;
        cuGetErrorName(rc, &name);
        cuGetErrorString(rc, &text);
        throw new CudaException(call, rc, name == 0 ? "CUDA_ERROR_?" : Marshal.PtrToStringAnsi(name)!, text == 0 ? "unknown" : Marshal.PtrToStringAnsi(text)!);
    }

    public static void Init() => Check(cuInit(0), "cuInit");

    public static string DeviceName(int device)
    {
        var buf = stackalloc byte[256];
        Check(cuDeviceGetName(buf, 256, device), "cuDeviceGetName");
        return Marshal.PtrToStringAnsi((nint)buf) ?? "?";
    }

    public static nint ModuleLoadData(byte[] image, string what)
    {
        nint m;
        fixed (byte* p = image) Check(cuModuleLoadData(&m, p), $"cuModuleLoadData({what})");
        return m;
    }

    public static nint ModuleGetFunction(nint module, string name)
    {
        nint f;
        var bytes = Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* p = bytes) Check(cuModuleGetFunction(&f, module, p), $"cuModuleGetFunction({name})");
        return f;
    }

    public static void FuncSetMaxDynamicShared(nint function, int bytes, string name) =>
        Check(cuFuncSetAttribute(function, FuncAttributeMaxDynamicSharedSizeBytes, bytes), $"cuFuncSetAttribute({name}, max dynamic shared {bytes})");

    /// <summary>Launches and checks the launch's return code; <paramref name="args"/> points at an array of argument pointers.</summary>
    public static void Launch(nint function, string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block,
        uint sharedBytes, nint stream, void** args)
    {
        Check(cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, stream, args, null),
            $"cuLaunchKernel({name}, grid {grid.X}x{grid.Y}x{grid.Z}, block {block.X}x{block.Y}x{block.Z}, {sharedBytes} B shared)");
    }
}
