namespace Harness.Reference;

/// <summary>
/// Finds the reference interpreter: <c>HARNESS_PYTHON</c> when set (any python with torch, transformers and safetensors,
/// or the chroot wrapper), else the wrapper that <c>ci/reference-env.sh</c> writes under
/// <c>${HARNESS_CACHE:-~/.cache/harness}/reference-python</c>.
/// </summary>
public static class ReferenceLocator
{
    public const string PythonVariable = "HARNESS_PYTHON";
    public const string CacheVariable = "HARNESS_CACHE";
    public const string RequireVariable = "HARNESS_REQUIRE_REFERENCE";

    /// <summary>True when live reference tests must run and fail rather than skip (CI sets it).</summary>
    public static bool Required => Environment.GetEnvironmentVariable(RequireVariable) is "1" or "true";

    public static string CacheDirectory =>
        Environment.GetEnvironmentVariable(CacheVariable) is { Length: > 0 } dir
            ? dir
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "harness");

    /// <summary>The interpreter command, or null with the reason none was found.</summary>
    public static (string? Python, string Reason) Find()
    {
        var explicitPython = Environment.GetEnvironmentVariable(PythonVariable);
        if (!string.IsNullOrWhiteSpace(explicitPython))
        {
            if (File.Exists(explicitPython) || !explicitPython.Contains('/'))
                return (explicitPython, $"{PythonVariable}={explicitPython}");
            return (null, $"{PythonVariable}={explicitPython} does not exist");
        }
        var wrapper = Path.Combine(CacheDirectory, "reference-python");
        if (File.Exists(wrapper)) return (wrapper, $"provisioned reference at {wrapper}");
        return (null, $"no reference interpreter: set {PythonVariable} to a python with torch and transformers, or run ci/reference-env.sh (looked for {wrapper})");
    }
}
