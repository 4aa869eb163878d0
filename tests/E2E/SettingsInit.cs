using System.Runtime.CompilerServices;

namespace Harness.Tests.E2E;

/// <summary>This test assembly's boundary: the engine's and the reference's settings from the environment, read once as the CLI reads them.</summary>
internal static class SettingsInit
{
    [ModuleInitializer]
    internal static void Configure()
    {
        if (Cli.ConfigureSettings() is { } bad) throw new InvalidOperationException(bad);
    }
}
