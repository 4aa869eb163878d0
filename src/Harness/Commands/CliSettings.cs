namespace Harness.Commands;

/// <summary>
/// The CLI's own settings from outside the process, read once at the boundary (<see cref="Cli.ConfigureSettings"/>) beside
/// the engine's and the reference's: nothing below the boundary reads an environment variable (SettingsBoundaryTests).
/// </summary>
public sealed record CliSettings
{
    /// <summary>HARNESS_FIXTURES: the fixtures folder (null: the nearest fixtures/ folder above the working directory or the assembly).</summary>
    public string? Fixtures { get; init; }

    /// <summary>CI set to anything but false/0, or TERM=dumb: plain line output even on a terminal (no live table, no progress line).</summary>
    public bool PlainTerminal { get; init; }

    private static CliSettings _current = new();

    /// <summary>The settings the host configured (defaults until it does).</summary>
    public static CliSettings Current => Volatile.Read(ref _current);

    /// <summary>Sets the process's settings: the host, once, at its boundary.</summary>
    public static void Configure(CliSettings settings) => Volatile.Write(ref _current, settings ?? throw new ArgumentNullException(nameof(settings)));

    /// <summary>The settings from the host's variables (<paramref name="variable"/>: name to value, null when unset).</summary>
    public static CliSettings From(Func<string, string?> variable)
    {
        string? Get(string name) => variable(name) is { Length: > 0 } v ? v : null;
        return new CliSettings
        {
            Fixtures = Get("HARNESS_FIXTURES"),
            PlainTerminal = Get("CI") is { } ci && !ci.Equals("false", StringComparison.OrdinalIgnoreCase) && ci != "0" || Get("TERM") == "dumb",
        };
    }
}
