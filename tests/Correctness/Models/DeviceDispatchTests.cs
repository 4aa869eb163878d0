using Harness.Scenarios;

namespace Harness.Tests.Correctness.Models;

/// <summary>
/// Devices below the models: the model code (src/Engine/Models) never asks which device a tensor is on; the ops, the one
/// attention and the residual norm dispatch (issue "One model core", item 4). A model file that branches on IsCuda again
/// fails here with its name and line.
/// </summary>
public class DeviceDispatchTests
{
    [Fact]
    public void No_model_file_branches_on_the_device()
    {
        var root = Directory.GetParent(Fixtures.DefaultDirectory())!.FullName;
        var models = Path.Combine(root, "src", "Engine", "Models");
        Assert.True(Directory.Exists(models), $"{models} not found");
        var hits = Directory.EnumerateFiles(models, "*.cs", SearchOption.AllDirectories)
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (File: Path.GetRelativePath(root, f), Line: i + 1, Text: line)))
            .Where(l => l.Text.Contains("IsCuda", StringComparison.Ordinal))
            .Select(l => $"{l.File}:{l.Line}: {l.Text.Trim()}")
            .ToList();
        Assert.True(hits.Count == 0, "device branches in model code:\n" + string.Join("\n", hits));
    }
}
