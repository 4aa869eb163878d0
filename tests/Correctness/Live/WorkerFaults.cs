using Harness.Reference;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// The worker with the tests' fault ops (worker_faults.py: fault_crash, fault_hang, fault_garbage, fault_alloc) spliced in
/// after its extensions. The shipped worker carries no such op (issue 20, "test hooks out of production code"): a test
/// that plants a worker failure starts its own worker from <see cref="Source"/>.
/// </summary>
public static class WorkerFaults
{
    public static string Source { get; } = TestWorkerSource.With("worker_faults.py");
}

/// <summary>Issue 20: the worker users run has no op that exists only for the tests (planted failures, HF under its own debugger).</summary>
public sealed class WorkerFaultsTests
{
    [Fact]
    public void The_shipped_worker_carries_no_fault_op_and_the_tests_worker_adds_them_after_the_extensions()
    {
        var shipped = ReferenceWorker.Source();
        Assert.DoesNotContain("def op_fault_", shipped);
        Assert.DoesNotContain("def op_debug_", shipped);
        Assert.DoesNotContain("model_addition_debugger_context", shipped);
        int extension = WorkerFaults.Source.IndexOf("OPS[\"gemma4_build\"]", StringComparison.Ordinal);
        int fault = WorkerFaults.Source.IndexOf("OPS[\"fault_crash\"] = op_fault_crash", StringComparison.Ordinal);
        Assert.True(extension > 0 && fault > extension, "the fault ops follow the extensions");
        // the same worker and extensions up to the marker: the tests run the shipped code plus their ops, nothing else changed
        Assert.StartsWith(shipped[..shipped.IndexOf(ReferenceWorker.ExtensionMarker, StringComparison.Ordinal)], WorkerFaults.Source, StringComparison.Ordinal);
    }
}
