using System.Text.Json.Nodes;
using Harness.Engine.Tensors;
using Harness.Reference;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// A worker that crashes, hangs or writes garbage fails the calling test with a clear message and is restarted for the
/// next call; a Python exception comes back as a C# exception carrying the traceback. The failures are planted by the
/// tests' fault ops (<see cref="WorkerFaults"/>: the shipped worker has none). The class shares one worker of its own
/// (a worker start is the slow part; the shared one is never disturbed); each test counts starts from its own first call.
/// </summary>
[Trait(LiveReference.Tier, LiveReference.Live)]
[Collection(SerialCollection.Name)]
public sealed class WorkerSupervisionTests : IClassFixture<WorkerSupervisionTests.FaultWorker>
{
    /// <summary>The class's worker, with the fault ops; started by the first call of the first live test.</summary>
    public sealed class FaultWorker : IDisposable
    {
        public ReferenceWorker Worker { get; } = new(workerSource: WorkerFaults.Source) { DefaultTimeout = TimeSpan.FromSeconds(5), Threads = 1 };
        public void Dispose() => Worker.Dispose();
    }

    private readonly ReferenceWorker _worker;

    public WorkerSupervisionTests(FaultWorker fixture)
    {
        LiveReference.Client(); // skip or fail as the tier says
        _worker = fixture.Worker;
    }

    private Tensor Matmul2x2()
    {
        var a = Tensor.FromArray([1f, 2f, 3f, 4f], 2, 2);
        return _worker.Call("matmul", null, [new("a", a), new("b", a)]).Tensor("out")!;
    }

    /// <summary>
    /// Also issue 24: the worker dies with its harness (PR_SET_PDEATHSIG), and the kernel's "parent" there is the thread
    /// that forked it: a worker restarted by a thread that then ends (a thread-pool thread retiring after a quiet spell)
    /// must live on. Every start goes through one long-lived thread (WorkerSpawner).
    /// </summary>
    [SkippableFact]
    public void Worker_crash_fails_the_call_with_its_exit_code_and_the_next_call_restarts_it_for_good()
    {
        Assert.Equal(new double[] { 7, 10, 15, 22 }, Matmul2x2().ToDoubleArray());
        int starts = _worker.Starts;

        var ex = Assert.Throws<ReferenceWorkerFailedException>(() => _worker.Call("fault_crash", new JsonObject { ["code"] = 17 }));
        Assert.Contains("'fault_crash'", ex.Message);
        Assert.Contains("exited with code 17", ex.Message);

        // the restart is the call of a thread that has ended by the next call
        Exception? failed = null;
        var thread = new Thread(() =>
        {
            try { Assert.Equal(new double[] { 7, 10, 15, 22 }, Matmul2x2().ToDoubleArray()); }
            catch (Exception e) { failed = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(failed);
        Assert.Equal(starts + 1, _worker.Starts);
        Thread.Sleep(300);
        Assert.Equal(new double[] { 7, 10, 15, 22 }, Matmul2x2().ToDoubleArray());
        Assert.True(_worker.Starts == starts + 1, "the worker died with the thread that restarted it and was started again");
    }

    [SkippableFact]
    public void Worker_hang_past_the_timeout_is_killed_and_restarted()
    {
        Matmul2x2();
        int starts = _worker.Starts;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var ex = Assert.Throws<ReferenceWorkerFailedException>(() =>
            _worker.Call("fault_hang", new JsonObject { ["seconds"] = 600 }, timeout: TimeSpan.FromSeconds(2)));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"the timeout took {sw.Elapsed}");
        Assert.Contains("did not answer within 2 s", ex.Message);
        Assert.Contains("killed", ex.Message);

        Assert.Equal(new double[] { 7, 10, 15, 22 }, Matmul2x2().ToDoubleArray());
        Assert.Equal(starts + 1, _worker.Starts);
    }

    [SkippableFact]
    public void Worker_writing_garbage_is_reported_as_not_a_frame_and_restarted()
    {
        Matmul2x2();
        var ex = Assert.Throws<ReferenceWorkerFailedException>(() => _worker.Call("fault_garbage"));
        Assert.Contains("not a protocol frame", ex.Message);
        Assert.Equal(new double[] { 7, 10, 15, 22 }, Matmul2x2().ToDoubleArray());
    }

    [SkippableFact]
    public void Python_exception_carries_type_message_and_traceback_and_the_worker_stays_up()
    {
        Matmul2x2();
        int starts = _worker.Starts;
        var a = Tensor.Zeros(DType.Float32, 2, 3);
        var b = Tensor.Zeros(DType.Float32, 4, 5);
        var ex = Assert.Throws<ReferencePythonException>(() => _worker.Call("matmul", null, [new("a", a), new("b", b)]));
        Assert.Equal("RuntimeError", ex.PythonType);
        Assert.Contains("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)", ex.PythonMessage);
        Assert.Contains("Traceback", ex.Traceback);
        Assert.Equal(new double[] { 7, 10, 15, 22 }, Matmul2x2().ToDoubleArray());
        Assert.Equal(starts, _worker.Starts);
    }

    [SkippableFact]
    public void Unknown_op_is_an_error_reply_not_a_dead_worker()
    {
        var ex = Assert.Throws<ReferencePythonException>(() => _worker.Call("no_such_op"));
        Assert.Contains("no_such_op", ex.Message);
        Assert.Equal(new double[] { 7, 10, 15, 22 }, Matmul2x2().ToDoubleArray());
    }

    [Fact]
    public void Missing_interpreter_is_a_clear_error_naming_it()
    {
        using var worker = new ReferenceWorker("/nonexistent/python3", workerSource: "pass");
        var ex = Assert.Throws<ReferenceUnavailableException>(() => worker.Start());
        Assert.Contains("/nonexistent/python3", ex.Message);
    }

    [Fact]
    public void Interpreter_that_is_not_a_worker_fails_the_start_with_its_output()
    {
        // /bin/sh ignores the worker protocol: it reads "-u" as an option and exits; the start must fail, not hang.
        using var worker = new ReferenceWorker("/bin/sh", workerSource: "pass") { StartTimeout = TimeSpan.FromSeconds(10) };
        var ex = Assert.Throws<ReferenceUnavailableException>(() => worker.Start());
        Assert.Contains("/bin/sh", ex.Message);
    }
}
