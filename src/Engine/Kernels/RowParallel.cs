using Harness.Engine.Kernels.Gemm;

namespace Harness.Engine.Kernels;

/// <summary>
/// Runs a per-row body over rows, in parallel when the work is large enough (rows are independent). The parallel form
/// runs on the GEMM's worker pool (<see cref="GemmThreadPool"/>), so the glue between two products wakes the same parked
/// worker as the products do instead of a second set of threads competing with it for the cores.
/// </summary>
public static class RowParallel
{
    /// <summary>Below this many elements a single thread does all rows.</summary>
    public const int MinParallelElements = 1 << 15;

    public static void For(int rows, int cols, int threads, Action<int> body)
    {
        if (threads <= 1 || rows < 2 || (long)rows * cols < MinParallelElements)
        {
            for (int r = 0; r < rows; r++) body(r);
            return;
        }
        int tasks = Math.Min(rows, threads);
        GemmThreadPool.Shared.Run(new RowJob(rows, Math.Min(rows, threads * 4), body), tasks);
    }

    // chunks of consecutive rows, taken by whichever task is free next (rows of uneven cost, e.g. causal attention, balance)
    private sealed class RowJob(int rows, int chunks, Action<int> body) : GemmJob
    {
        private int _next = -1;

        public override void Execute(int task)
        {
            for (int c = Interlocked.Increment(ref _next); c < chunks; c = Interlocked.Increment(ref _next))
            {
                int start = (int)((long)rows * c / chunks), end = (int)((long)rows * (c + 1) / chunks);
                for (int r = start; r < end; r++) body(r);
            }
        }
    }
}
