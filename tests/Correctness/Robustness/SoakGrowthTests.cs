using Harness.Commands;

namespace Harness.Tests.Correctness.Robustness;

/// <summary>
/// Issue 24, item 6: "on the GPU machine, device memory after each round of `run --device cuda`. Nothing grows." The soak's
/// verdict on its rounds: a count above the warm-up round's, or memory (resident, and the GPU's with --device cuda) above
/// 125 % of it, is growth; a CPU soak (device memory -1, not measured) is never judged on the device.
/// </summary>
public sealed class SoakGrowthTests
{
    private static SoakCommand.Round R(int i, long rss = 500, int fds = 40, long device = -1) =>
        new(i, 10, 0, 1.0, rss, 100, fds, 30, 0, 0, 1, device);

    [Fact]
    public void Steady_rounds_do_not_grow()
    {
        Assert.Empty(SoakCommand.Growth([R(1, device: 2048), R(2, device: 2100), R(3, device: 2048)]));
        Assert.Empty(SoakCommand.Growth([R(1), R(2), R(3)]));
    }

    [Fact]
    public void Device_memory_that_keeps_growing_is_named()
    {
        var grew = SoakCommand.Growth([R(1, device: 2048), R(2, device: 2600), R(3, device: 3000)]);
        Assert.Equal("device memory: 2048 MiB after round 1, 3000 MiB after round 3", Assert.Single(grew));
    }

    [Fact]
    public void A_leaked_descriptor_and_resident_growth_are_each_named()
    {
        var grew = SoakCommand.Growth([R(1), R(2, rss: 700, fds: 41)]);
        Assert.Contains("open file descriptors: 40 after round 1, 41 after round 2", grew);
        Assert.Contains("resident memory: 500 MiB after round 1, 700 MiB after round 2", grew);
    }
}
