namespace Harness.Engine.Kernels;

/// <summary>Runs a per-row body over rows, in parallel when the work is large enough (rows are independent).</summary>
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
        int chunks = Math.Min(rows, threads * 4);
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, c =>
        {
            int start = (int)((long)rows * c / chunks), end = (int)((long)rows * (c + 1) / chunks);
            for (int r = start; r < end; r++) body(r);
        });
    }
}
