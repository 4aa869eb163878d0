using Harness.Reference;

namespace Harness.Tests.Correctness.Live;

/// <summary>
/// Access to the live reference for tests of the "Live" tier. With no interpreter found the test is skipped with a
/// one-line reason, unless HARNESS_REQUIRE_REFERENCE=1 (CI), where it fails instead. A found interpreter that fails
/// to start always fails the test.
/// </summary>
public static class LiveReference
{
    public const string Tier = "Tier";
    public const string Live = "Live";

    public static ReferenceClient Client()
    {
        var worker = ReferenceWorker.Shared;
        if (!worker.IsAvailable)
        {
            if (ReferenceLocator.Required)
                throw new ReferenceUnavailableException($"{ReferenceLocator.RequireVariable}=1 but {worker.Description}");
            Skip.If(true, worker.Description);
        }
        worker.Start();
        return ReferenceClient.Shared;
    }
}
