using System.Runtime.InteropServices;

namespace Harness.Engine.Cuda.Interop;

/// <summary>
/// libcudart's stream capture and graph calls (cudaStreamBeginCapture .. cudaGraphLaunch), checked like
/// <see cref="CudaRuntime"/>'s: a non-zero cudaError_t is a <see cref="CudaException"/> naming the call.
/// </summary>
public static unsafe class CudaGraphApi
{
    private const string Lib = CudaLibraries.Runtime;

    /// <summary>cudaStreamCaptureModeRelaxed: other threads (finalizers freeing old tensors on their own streams) may go on.</summary>
    public const int CaptureModeRelaxed = 2;

    [DllImport(Lib)] private static extern int cudaStreamBeginCapture(nint stream, int mode);
    [DllImport(Lib)] private static extern int cudaStreamEndCapture(nint stream, nint* graph);
    [DllImport(Lib)] private static extern int cudaStreamIsCapturing(nint stream, int* status);
    [DllImport(Lib)] private static extern int cudaGraphInstantiate(nint* exec, nint graph, ulong flags);
    [DllImport(Lib)] private static extern int cudaGraphLaunch(nint exec, nint stream);
    [DllImport(Lib)] private static extern int cudaGraphExecDestroy(nint exec);
    [DllImport(Lib)] private static extern int cudaGraphDestroy(nint graph);
    [DllImport(Lib)] private static extern int cudaGraphGetNodes(nint graph, nint* nodes, nuint* count);
    [DllImport(Lib)] private static extern int cudaGetLastError();

    public static void BeginCapture(nint stream, int mode = CaptureModeRelaxed) =>
        CudaRuntime.Check(cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture");

    public static nint EndCapture(nint stream)
    {
        nint g;
        CudaRuntime.Check(cudaStreamEndCapture(stream, &g), "cudaStreamEndCapture");
        return g;
    }

    /// <summary>Ends a capture that failed half-way, discarding what it recorded; never throws.</summary>
    public static void AbandonCapture(nint stream)
    {
        int status;
        if (cudaStreamIsCapturing(stream, &status) == 0 && status != 0)
        {
            nint g;
            if (cudaStreamEndCapture(stream, &g) == 0 && g != 0) cudaGraphDestroy(g);
        }
        cudaGetLastError();
    }

    public static bool IsCapturing(nint stream)
    {
        int status;
        CudaRuntime.Check(cudaStreamIsCapturing(stream, &status), "cudaStreamIsCapturing");
        return status == 1;
    }

    public static nint Instantiate(nint graph)
    {
        nint e;
        CudaRuntime.Check(cudaGraphInstantiate(&e, graph, 0), "cudaGraphInstantiate");
        return e;
    }

    public static int NodeCount(nint graph)
    {
        nuint n = 0;
        CudaRuntime.Check(cudaGraphGetNodes(graph, null, &n), "cudaGraphGetNodes");
        return (int)n;
    }

    public static void Launch(nint exec, nint stream) => CudaRuntime.Check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    public static void DestroyExec(nint exec) => cudaGraphExecDestroy(exec);
    public static void Destroy(nint graph) => cudaGraphDestroy(graph);
}
