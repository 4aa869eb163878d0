namespace Harness.Engine.Runtime;

/// <summary>
/// Process-wide compute switches, read by every kernel.
/// <list type="bullet">
/// <item><see cref="BatchInvariant"/> (vLLM's VLLM_BATCH_INVARIANT; here HARNESS_BATCH_INVARIANT=1): every output row of a
/// matmul or row reduction is bitwise identical whatever the number of rows, the row's position and the thread count.
/// Off by default: the fast paths (GEMV for one row, split-K, hardware-width reductions) change the reduction order.</item>
/// <item><see cref="Threads"/>: worker threads for kernels (HARNESS_THREADS, default: processor count).</item>
/// <item><see cref="ParallelThreshold"/>: the GEMM size below which a product runs on one thread (null: the kernels'
/// default, <c>GemmBlocking.DefaultParallelThreshold</c>); `check-kernels` and the kernel tests lower it to 0 for a scope so
/// that small shapes run the thread partition.</item>
/// </list>
/// Each is ambient for the current async flow (parallel tests set them without seeing each other) and changed only by a
/// scope that puts the previous value back when disposed, once (a scope disposed again after an outer one cannot put
/// its stale value back).
/// </summary>
public static class ComputeSettings
{
    private static readonly AsyncLocal<bool?> _batchInvariant = new();
    private static readonly AsyncLocal<int?> _threads = new();
    private static readonly AsyncLocal<long?> _parallelThreshold = new();

    // the process defaults: HARNESS_BATCH_INVARIANT and HARNESS_THREADS, as the host read them (EngineSettings)
    public static bool BatchInvariant => _batchInvariant.Value ?? EngineSettings.Current.BatchInvariant;

    public static int Threads => _threads.Value ?? EngineSettings.Current.Threads;

    /// <summary>The current flow's GEMM parallel threshold in multiply-adds (M*N*K), or null for the kernels' default.</summary>
    public static long? ParallelThreshold => _parallelThreshold.Value;

    /// <summary>Sets batch-invariant mode for the current flow until the scope is disposed.</summary>
    public static IDisposable UseBatchInvariant(bool enabled = true)
    {
        var previous = _batchInvariant.Value;
        _batchInvariant.Value = enabled;
        return new Restore(() => _batchInvariant.Value = previous);
    }

    /// <summary>Sets the kernel thread count for the current flow until the scope is disposed.</summary>
    public static IDisposable UseThreads(int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "thread count must be at least 1");
        var previous = _threads.Value;
        _threads.Value = threads;
        return new Restore(() => _threads.Value = previous);
    }

    /// <summary>Runs products of at least <paramref name="multiplyAdds"/> (M*N*K) on several threads, for the current flow until the scope is disposed.</summary>
    public static IDisposable UseParallelThreshold(long multiplyAdds)
    {
        if (multiplyAdds < 0) throw new ArgumentOutOfRangeException(nameof(multiplyAdds), multiplyAdds, "the parallel threshold is a count of multiply-adds (0 or more)");
        var previous = _parallelThreshold.Value;
        _parallelThreshold.Value = multiplyAdds;
        return new Restore(() => _parallelThreshold.Value = previous);
    }

    private sealed class Restore(Action undo) : IDisposable
    {
        private Action? _undo = undo;
        public void Dispose()
        {
            _undo?.Invoke();
            _undo = null;
        }
    }
}
