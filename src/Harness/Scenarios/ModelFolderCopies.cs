using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Engine.IO;

namespace Harness.Scenarios;

/// <summary>
/// Copies of model folders with another config.json (the weights are symbolic links to the originals), for the engine
/// only: config-field mutations, and faults that are a config (rope scaling dropped). Removed when disposed, at the
/// end of the run, or by the next run when this one was killed (a <see cref="Reference.ScratchFolders"/> folder).
/// </summary>
public sealed class ModelFolderCopies : IDisposable
{
    private readonly Lazy<string> _root = new(() => Reference.ScratchFolders.Create(Path.Combine(Path.GetTempPath(), "harness"), "model-copies"));
    private int _next;

    /// <summary>A copy of <paramref name="dir"/> whose config.json is <paramref name="configJson"/>.</summary>
    public string Copy(string dir, string configJson)
    {
        var copy = Path.Combine(_root.Value, Interlocked.Increment(ref _next).ToString(CultureInfo.InvariantCulture));
        Directory.CreateDirectory(copy);
        foreach (var file in Directory.EnumerateFiles(dir))
            if (Path.GetFileName(file) != "config.json")
                File.CreateSymbolicLink(Path.Combine(copy, Path.GetFileName(file)), Path.GetFullPath(file));
        File.WriteAllText(Path.Combine(copy, "config.json"), configJson);
        return copy;
    }

    /// <summary>A copy of <paramref name="dir"/> whose config.json is the original changed by <paramref name="edit"/>.</summary>
    public string Edited(string dir, Action<JsonObject> edit)
    {
        var config = JsonNode.Parse(InputFiles.ReadCapped(Path.Combine(dir, "config.json"), InputFiles.ConfigMaxBytes, "config file"))!.AsObject();
        edit(config);
        return Copy(dir, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    public void Dispose()
    {
        if (_root.IsValueCreated) Reference.ScratchFolders.Release(_root.Value);
    }
}
