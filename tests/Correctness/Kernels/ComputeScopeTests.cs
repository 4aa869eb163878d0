using Harness.Engine.Kernels.Gemm;
using Harness.Engine.Runtime;

namespace Harness.Tests.Correctness.Kernels;

/// <summary>
/// Issue 20 item 5: the GEMM parallel threshold was a setting of its own in GemmBlocking ("tests only") whose scope put
/// its previous value back on EVERY dispose: an inner scope disposed a second time (a `using` plus an explicit Dispose)
/// after its outer scope had ended wrote the outer scope's value back, and every later product of that flow ran with a
/// threshold nobody had asked for. It is now one of the compute settings (ComputeSettings.UseParallelThreshold, beside
/// the thread count and batch invariance), changed only for a scope, restored once.
/// </summary>
public sealed class ComputeScopeTests
{
    [Fact]
    public void An_inner_scope_disposed_again_after_its_outer_one_leaves_the_default()
    {
        Assert.Equal(GemmBlocking.DefaultParallelThreshold, GemmBlocking.ParallelThreshold);
        var outer = ComputeSettings.UseParallelThreshold(5);
        var inner = ComputeSettings.UseParallelThreshold(0);
        Assert.Equal(0, GemmBlocking.ParallelThreshold);
        inner.Dispose();
        Assert.Equal(5, GemmBlocking.ParallelThreshold);
        outer.Dispose();
        inner.Dispose();
        Assert.Equal(GemmBlocking.DefaultParallelThreshold, GemmBlocking.ParallelThreshold);
    }

    [Fact]
    public async Task A_scope_in_one_flow_is_not_seen_by_another()
    {
        using var gate = new SemaphoreSlim(0);
        var lowered = Task.Run(async () =>
        {
            using var scope = ComputeSettings.UseParallelThreshold(0);
            await gate.WaitAsync();
            return GemmBlocking.ParallelThreshold;
        });
        var other = await Task.Run(() => GemmBlocking.ParallelThreshold);
        gate.Release();
        Assert.Equal(0, await lowered);
        Assert.Equal(GemmBlocking.DefaultParallelThreshold, other);
        Assert.Equal(GemmBlocking.DefaultParallelThreshold, GemmBlocking.ParallelThreshold);
    }

    [Fact]
    public void A_negative_threshold_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ComputeSettings.UseParallelThreshold(-1));
    }
}
