using System.Runtime.CompilerServices;

namespace Harness.Tests.Gpu;

/// <summary>This test assembly's boundary: the engine's settings from the environment, read once as the CLI reads them.</summary>
internal static class EngineSettingsInit
{
    [ModuleInitializer]
    internal static void Configure()
    {
        if (Cli.ConfigureSettings() is { } bad) throw new InvalidOperationException(bad);
    }
}
