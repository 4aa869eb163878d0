using System.Runtime.ExceptionServices;

namespace Harness.Engine.Kernels.Gemm;

/// <summary>One parallel GEMM step: tasks 0..count-1, each writing a disjoint part of C.</summary>
internal abstract class GemmJob
{
    public abstract void Execute(int task);
}

/// <summary>
/// A small persistent worker pool for GEMM: the caller runs task 0, parked background workers run the rest
/// (woken through a semaphore that spins briefly before sleeping). One job at a time; a caller that finds the pool
/// busy (another flow, or a GEMM called from inside a task) falls back to Parallel.For. Which thread runs a task
/// never affects a result: tasks own disjoint C regions and each computes them in a fixed order.
/// </summary>
internal sealed class GemmThreadPool
{
    public static readonly GemmThreadPool Shared = new();

    [ThreadStatic] private static bool _insideJob;

    private readonly object _gate = new();
    private readonly List<Worker> _workers = [];
    private readonly ManualResetEventSlim _done = new(false, spinCount: 2000);
    private GemmJob? _job;
    private int _remaining;
    private Exception? _error;

    public void Run(GemmJob job, int tasks)
    {
        if (tasks <= 1)
        {
            if (tasks == 1) job.Execute(0);
            return;
        }
        if (_insideJob || !Monitor.TryEnter(_gate))
        {
            Parallel.For(0, tasks, new ParallelOptions { MaxDegreeOfParallelism = tasks }, job.Execute);
            return;
        }
        try
        {
            while (_workers.Count < tasks - 1) _workers.Add(new Worker(this, _workers.Count));
            _job = job;
            _error = null;
            _done.Reset();
            Volatile.Write(ref _remaining, tasks - 1);
            for (int t = 1; t < tasks; t++) _workers[t - 1].Start(t);
            _insideJob = true;
            try
            {
                job.Execute(0);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, e, null);
            }
            finally
            {
                _insideJob = false;
            }
            _done.Wait();
            _job = null;
            if (_error is { } error) ExceptionDispatchInfo.Capture(error).Throw();
        }
        finally
        {
            Monitor.Exit(_gate);
        }
    }

    private void Finish(int task)
    {
        _insideJob = true;
        try
        {
            _job!.Execute(task);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _error, e, null);
        }
        finally
        {
            _insideJob = false;
        }
        if (Interlocked.Decrement(ref _remaining) == 0) _done.Set();
    }

    private sealed class Worker
    {
        private readonly GemmThreadPool _pool;
        private readonly SemaphoreSlim _wake = new(0);
        private int _task;

        public Worker(GemmThreadPool pool, int index)
        {
            _pool = pool;
            new Thread(Loop) { IsBackground = true, Name = $"gemm-worker-{index + 1}" }.Start();
        }

        public void Start(int task)
        {
            _task = task;
            _wake.Release();
        }

        private void Loop()
        {
            while (true)
            {
                _wake.Wait();
                _pool.Finish(_task);
            }
        }
    }
}
