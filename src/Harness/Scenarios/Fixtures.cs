namespace Harness.Scenarios;

/// <summary>
/// The fixtures folder: fixtures/reference/KEY.safetensors (recorded reference outputs, versions in the metadata) and
/// fixtures/models/NAME-DTYPE/ (config.json + model.safetensors that HF built from the config and seed).
/// </summary>
public static class Fixtures
{
    /// <summary>HARNESS_FIXTURES (<see cref="Commands.CliSettings.Fixtures"/>), else the nearest fixtures/ folder above the working directory or the assembly.</summary>
    public static string DefaultDirectory()
    {
        if (Commands.CliSettings.Current.Fixtures is { } configured) return configured;
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (Directory.Exists(Path.Combine(dir.FullName, "fixtures")) && File.Exists(Path.Combine(dir.FullName, "Harness.sln")))
                    return Path.Combine(dir.FullName, "fixtures");
        }
        return Path.Combine(Directory.GetCurrentDirectory(), "fixtures");
    }

    public static string BundlePath(string fixtures, string key) =>
        Path.Combine(fixtures, "reference", key.Replace('/', '_') + ".safetensors");

    /// <summary>
    /// Records every scenario's reference with the live reference: the bundles and the models they were computed on.
    /// Returns the files written.
    /// </summary>
    public static IReadOnlyList<string> Record(ScenarioContext live, IEnumerable<Scenario> scenarios, Action<string>? log = null)
    {
        if (!live.IsLive) throw new InvalidOperationException("recording fixtures needs the live reference");
        var written = new List<string>();
        foreach (var group in scenarios.GroupBy(s => s.ReferenceKey))
        {
            var bundle = live.Reference(group.First());
            var path = BundlePath(live.FixturesDirectory, group.Key);
            bundle.Save(path);
            written.Add(path);
            log?.Invoke($"recorded {group.Key} ({bundle.Tensors.Count} tensors{(bundle.Tokens is null ? "" : $", {bundle.Tokens.Length} tokens")}) -> {path}");
        }
        foreach (var (name, dir) in live.BuiltModels())
        {
            var target = Path.Combine(live.FixturesDirectory, "models", name);
            Directory.CreateDirectory(target);
            foreach (var file in Directory.GetFiles(dir).Where(f => f.EndsWith(".json", StringComparison.Ordinal) || f.EndsWith(".safetensors", StringComparison.Ordinal)))
            {
                var dest = Path.Combine(target, Path.GetFileName(file));
                Engine.IO.AtomicFile.Copy(file, dest);   // a killed recording leaves the previous model file, never part of one
                written.Add(dest);
            }
            log?.Invoke($"recorded model {name} -> {target}");
        }
        return written;
    }
}
