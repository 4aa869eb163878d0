namespace Harness.Tests.Correctness;

/// <summary>Tests that vary the thread count or time themselves run alone, not beside other test classes.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialCollection
{
    public const string Name = "serial";
}
