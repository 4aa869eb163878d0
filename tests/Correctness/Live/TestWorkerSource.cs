using System.Text;
using Harness.Reference;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// The worker's source with test-only ops spliced in after its extensions (<see cref="ReferenceWorker.Source"/>): Python
/// files embedded in this test assembly (Correctness.csproj), each adding ops with OPS["name"] = fn. The shipped worker
/// carries none of them (issue 20, "test hooks out of production code"); a test that needs one starts its own worker.
/// </summary>
public static class TestWorkerSource
{
    public static string With(params string[] resources) => ReferenceWorker.Source(string.Join("\n", resources.Select(Read)));

    private static string Read(string resource)
    {
        using var s = typeof(TestWorkerSource).Assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"{resource} is not embedded in the test assembly (Correctness.csproj)");
        using var r = new StreamReader(s, Encoding.UTF8);
        return r.ReadToEnd();
    }
}
