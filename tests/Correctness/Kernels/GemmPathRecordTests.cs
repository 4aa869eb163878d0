using System.Reflection;
using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Kernels;

/// <summary>
/// Test hooks out of production code (issue 20, item 5): the CPU GEMM, the packed GEMM and the cuBLAS/CUDA GEMM each wrote
/// "which path did the last call take" into a thread-static on every call, for tests to read. The path is now a function
/// of the operands and the mode (<c>Gemm.PathFor</c>, <c>PackedGemm.PathFor</c>/<c>UsesNative</c>, <c>CudaGemm.PathFor</c>)
/// that the product itself dispatches on; no engine type keeps a record of its last call.
/// </summary>
public class GemmPathRecordTests
{
    private static List<string> LastCallRecords(IEnumerable<Type> types) =>
        [.. types.SelectMany(t => t.GetFields(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly)
                .Where(f => f.Name.Contains("last", StringComparison.OrdinalIgnoreCase) && f.IsDefined(typeof(ThreadStaticAttribute)))
                .Select(f => $"{t.FullName}.{f.Name}")
            .Concat(t.GetProperties(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly)
                .Where(p => p.Name.StartsWith("Last", StringComparison.Ordinal)).Select(p => $"{t.FullName}.{p.Name}")))];

    [Fact]
    public void No_engine_type_records_the_path_of_its_last_call()
    {
        var hits = LastCallRecords(typeof(Tensor).Assembly.GetTypes());
        Assert.True(hits.Count == 0, "last-call records in the engine:\n" + string.Join("\n", hits));
    }

    // What Gemm, PackedGemm and CudaGemm had.
    private static class PlantedRecords
    {
        [ThreadStatic] private static int _lastPath;
        [ThreadStatic] public static string? LastPath;
        internal static int LastNative => _lastPath;
        public static void Multiply() { _lastPath = 1; LastPath = "cublas"; }
    }

    [Fact]
    public void The_check_names_a_planted_last_call_record()
    {
        var hits = LastCallRecords([typeof(PlantedRecords)]);
        Assert.Equal(3, hits.Count);
        Assert.Contains(hits, h => h.EndsWith("PlantedRecords._lastPath", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.EndsWith("PlantedRecords.LastNative", StringComparison.Ordinal));
    }

    [Fact]
    public void The_path_functions_answer_what_the_old_records_said()
    {
        var x = MatrixView.Of(Tensor.Uniform(DType.Float32, 1, -1f, 1f, 1, 64));
        var wT = MatrixView.Of(Tensor.Uniform(DType.Float32, 2, -1f, 1f, 48, 64).T());     // x @ W^T, K-contiguous
        using (Harness.Engine.Runtime.ComputeSettings.UseBatchInvariant(false)) Assert.Equal(GemmPath.GemvDot, Gemm.PathFor(x, wT));
        using (Harness.Engine.Runtime.ComputeSettings.UseBatchInvariant(true)) Assert.Equal(GemmPath.GemvChain, Gemm.PathFor(x, wT));
        Assert.Equal(GemmPath.None, Gemm.PathFor(x with { Rows = 0 }, wT));
        var w = Tensor.Uniform(DType.Float32, 3, -1f, 1f, 48, 64);
        var packed = PackedWeight.Pack(w, GemmKernel.Scalar);
        Assert.Equal(PackedPath.Blocked, PackedGemm.PathFor(packed, 9));
        Assert.Equal(PackedPath.None, PackedGemm.PathFor(packed, 0));
        Assert.False(PackedGemm.UsesNative(packed, DType.Float32, 1, invariant: false));
    }
}
