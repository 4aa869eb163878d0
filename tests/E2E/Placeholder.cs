namespace Harness.Tests.E2E;

public class CliSmokeTests
{
    [Fact]
    public void Cli_without_arguments_exits_non_zero()
    {
        Assert.Equal(1, global::Harness.Cli.Run([]));
    }
}
