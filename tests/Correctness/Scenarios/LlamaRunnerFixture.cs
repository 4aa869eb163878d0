using Harness.Scenarios;
using Harness.Tests.Correctness.Live;

namespace Harness.Tests.Correctness.Scenarios;

/// <summary>One runner per test run, so HF builds and runs each reference variant once for every scenario.</summary>
public static class LlamaRunnerFixture
{
    private static LlamaScenarioRunner? _runner;
    private static readonly object Gate = new();

    public static LlamaScenarioRunner Runner()
    {
        var client = LiveReference.Client();
        lock (Gate) return _runner ??= new LlamaScenarioRunner(client);
    }
}
