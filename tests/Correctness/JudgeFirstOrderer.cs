using Xunit.Abstractions;
using Xunit.Sdk;

[assembly: TestCollectionOrderer("Harness.Tests.Correctness.JudgeFirstOrderer", "Harness.Correctness")]

namespace Harness.Tests.Correctness;

/// <summary>
/// The order the parallel collections start in: the judge collection (its classes one after another, about 230 s: the
/// llama.cpp servers, the dumps) first, every other collection in xunit's default order after it. xunit runs the serial
/// collection only when every parallel one is done, so the judge collection, started 64 s in by the default order
/// (clean-clone CI of c9eefe9), ran 114 s alone on one core after the other parallel collections had finished (179 s)
/// and held the serial collection back until 293 s; started first, it ends beside them.
/// </summary>
public sealed class JudgeFirstOrderer : ITestCollectionOrderer
{
    private readonly DefaultTestCollectionOrderer _default = new();

    public IEnumerable<ITestCollection> OrderTestCollections(IEnumerable<ITestCollection> testCollections) =>
        _default.OrderTestCollections(testCollections).OrderBy(c => c.DisplayName == Judge.JudgeCollection.Name ? 0 : 1);
}
