using System.Collections.Concurrent;
using System.Diagnostics;

namespace Harness.Reference;

/// <summary>
/// Starts the reference workers from one thread that lives as long as this process. A worker sets PR_SET_PDEATHSIG
/// (SIGKILL when its parent dies, issue 24: a stopped worker outlived a killed run), and the kernel's "parent" there is
/// the thread that forked it (prctl(2)), not the process: a worker started by a thread-pool thread would be killed when
/// that thread retires after a quiet spell, mid-run. Process.Start forks on its calling thread, so every worker start
/// goes through this thread.
/// </summary>
internal static class WorkerSpawner
{
    private static readonly BlockingCollection<(ProcessStartInfo Start, TaskCompletionSource<Process> Started)> Requests = new();

    static WorkerSpawner()
    {
        new Thread(Serve) { IsBackground = true, Name = "harness-worker-spawner" }.Start();
    }

    /// <summary><see cref="Process.Start(ProcessStartInfo)"/> on the spawner thread: the process, or what Process.Start threw.</summary>
    public static Process Start(ProcessStartInfo start)
    {
        var started = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        Requests.Add((start, started));
        return started.Task.GetAwaiter().GetResult();
    }

    private static void Serve()
    {
        foreach (var (start, started) in Requests.GetConsumingEnumerable())
        {
            try
            {
                started.SetResult(Process.Start(start) ?? throw new InvalidOperationException($"Process.Start returned no process for {start.FileName}"));
            }
            catch (Exception e)
            {
                started.SetException(e);
            }
        }
    }
}
