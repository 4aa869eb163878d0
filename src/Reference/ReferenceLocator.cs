namespace Harness.Reference;

/// <summary>
/// Finds the reference interpreter: <c>HARNESS_PYTHON</c> when set (any python with torch, transformers and safetensors,
/// or the chroot wrapper), else the wrapper that <c>ci/reference-env.sh</c> writes under
/// <c>${HARNESS_CACHE:-~/.cache/harness}/reference-python</c>. Both as the host read them (<see cref="ReferenceSettings"/>).
/// </summary>
public static class ReferenceLocator
{
    public const string PythonVariable = ReferenceSettings.PythonVariable;
    public const string CacheVariable = ReferenceSettings.CacheVariable;
    public const string RequireVariable = ReferenceSettings.RequireVariable;

    /// <summary>True when live reference tests must run and fail rather than skip (CI sets HARNESS_REQUIRE_REFERENCE=1).</summary>
    public static bool Required => ReferenceSettings.Current.Required;

    public static string CacheDirectory => ReferenceSettings.Current.CacheDirectory;

    /// <summary>The interpreter command, or null with the reason none was found (the configured settings).</summary>
    public static (string? Python, string Reason) Find() => Find(ReferenceSettings.Current);

    /// <summary>The interpreter command <paramref name="settings"/> name, or null with the reason none was found.</summary>
    public static (string? Python, string Reason) Find(ReferenceSettings settings)
    {
        var explicitPython = settings.Python;
        if (!string.IsNullOrWhiteSpace(explicitPython))
        {
            if (File.Exists(explicitPython) || !explicitPython.Contains('/'))
                return (explicitPython, $"{PythonVariable}={explicitPython}");
            return (null, $"{PythonVariable}={explicitPython} does not exist");
        }
        var wrapper = Path.Combine(settings.CacheDirectory, "reference-python");
        if (File.Exists(wrapper)) return (wrapper, $"provisioned reference at {wrapper}");
        return (null, $"no reference interpreter: set {PythonVariable} to a python with torch and transformers, or run ci/reference-env.sh (looked for {wrapper})");
    }
}
