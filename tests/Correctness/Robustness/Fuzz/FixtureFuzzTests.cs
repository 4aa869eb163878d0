using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Scenarios;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Robustness.Fuzz;

/// <summary>
/// Recorded-fixture fuzzing (the offline tier): a catalog scenario's recording truncated, its header or bytes corrupted,
/// a module tensor removed, reshaped or retyped, the token tensors broken, its recorded inputs edited (a stale fixture),
/// its values edited (the comparison then fails, which is a named result), its metadata changed; or its recorded model
/// broken. Each mutant runs the scenario offline: it ends in a verdict (pass or fail) or an error naming the file.
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class FixtureFuzzTests(ITestOutputHelper output)
{
    [Fact]
    public void Every_fixture_mutant_ends_in_a_verdict_or_an_error_naming_the_file()
    {
        var work = FuzzInputs.TempDirectory("fixtures");
        try
        {
            var source = FuzzInputs.FixturesDirectory;
            FuzzInputs.Reset(Path.Combine(source, "reference"), Path.Combine(work, "reference"));
            foreach (var m in Directory.GetDirectories(Path.Combine(source, "models")))
                FuzzInputs.Reset(m, Path.Combine(work, "models", Path.GetFileName(m)));
            var scenarios = ScenarioCatalog.All.Where(s => File.Exists(Fixtures.BundlePath(source, s.ReferenceKey))).ToList();
            Scenario scenario = scenarios[0];
            string? restore = null, restoreFrom = null;
            int verdicts = 0;

            var campaign = new FuzzCampaign("fixtures", output) { CiMutants = 80 };
            campaign.Run(seed: 78, rng =>
            {
                if (restore is not null) FuzzInputs.Reset(restoreFrom!, restore);
                scenario = scenarios[rng.Next(scenarios.Count)];
                if (scenario is LlamaScenario && rng.Next(8) == 0)
                {
                    var llama = (LlamaScenario)scenario;
                    var name = TinyLlama.ModelName(llama.Variant) + (scenario.DType == DType.BFloat16 ? "-bf16" : "-fp32");
                    var model = Path.Combine(work, "models", name);
                    (restore, restoreFrom) = (model, Path.Combine(source, "models", name));
                    var weights = Path.Combine(model, Checkpoint.SingleFileName);
                    string what;
                    if (rng.Next(2) == 0)
                    {
                        FuzzInputs.Truncate(weights, rng);
                        what = "model.safetensors truncated";
                    }
                    else what = FuzzInputs.EditHeader(weights, rng);
                    return new FuzzCampaign.Mutant("model", $"{scenario.Id}: {what}", model);
                }
                var bundle = Fixtures.BundlePath(work, scenario.ReferenceKey);
                (restore, restoreFrom) = (Path.GetDirectoryName(bundle)!, Path.Combine(source, "reference"));
                var (kind, description) = MutateBundle(bundle, rng);
                return new FuzzCampaign.Mutant(kind, $"{scenario.Id}: {description}", bundle);
            }, m =>
            {
                var outcome = ScenarioRunner.Run(scenario, ScenarioContext.Recorded(work));
                _ = outcome.Result.Passed;   // a verdict, pass or fail, is a named result
                verdicts++;
            });
            output.WriteLine($"  {verdicts} mutants ran to a verdict");
            Assert.True(campaign.Passed > 0 && campaign.Named > 0, campaign.Summary);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static (string, string) MutateBundle(string path, Random rng)
    {
        switch (rng.Next(6))
        {
            case 0:
                FuzzInputs.Truncate(path, rng);
                return ("truncate", "recording truncated");
            case 1:
                return ("header-bytes", FuzzInputs.FlipBytes(path, rng, 0, FuzzInputs.HeaderEnd(path)));
            case 2:
                return ("data-bytes", FuzzInputs.FlipBytes(path, rng, FuzzInputs.HeaderEnd(path), long.MaxValue));
            case 3:
                return ("header-edit", FuzzInputs.EditHeader(path, rng));
            default:
                return ("rewrite", Rewrite(path, rng));
        }
    }

    /// <summary>A well-formed recording with one tensor or the metadata changed.</summary>
    private static string Rewrite(string path, Random rng)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        Dictionary<string, string> metadata;
        using (var file = SafetensorsFile.Open(path))
        {
            foreach (var n in file.Names) tensors[n] = file.ReadTensor(n);
            metadata = new Dictionary<string, string>(file.Metadata);
        }
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        if (names.Count == 0) return "no tensor to rewrite (the recording holds none)";
        // Half the time aim at the special tensors (tokens, top-k, recorded inputs).
        var special = names.Where(n => n.StartsWith("__", StringComparison.Ordinal)).ToList();
        var name = special.Count > 0 && rng.Next(2) == 0 ? special[rng.Next(special.Count)] : names[rng.Next(names.Count)];
        var t = tensors[name];
        string what;
        switch (rng.Next(9))
        {
            case 0:
                tensors.Remove(name);
                what = $"'{name}' removed";
                break;
            case 1:
                tensors[name] = t.Rank > 1 ? t.Reshape([.. t.ShapeArray.Skip(1).Select((d, i) => i == 0 ? d * t.Shape[0] : d)]) : t.Reshape(1, -1);
                what = $"'{name}' reshaped to {Shape.Format(tensors[name].Shape)}";
                break;
            case 2:
                tensors[name] = Tensor.Zeros(t.DType, [.. t.ShapeArray.Select(d => d + 1)]);
                what = $"'{name}' one larger in every dim";
                break;
            case 3:
                var dt = new[] { DType.Float32, DType.BFloat16, DType.Int64, DType.Int32 }[rng.Next(4)];
                tensors[name] = t.DType.IsFloatingPoint() || dt.IsFloatingPoint() ? Tensor.Zeros(dt, t.ShapeArray) : t.To(dt);
                what = $"'{name}' as {dt}";
                break;
            case 4:
                var scaled = t.To(DType.Float32).ToFloatArray().Select(x => x * 1.01f + 1e-3f).ToArray();
                tensors[name] = Tensor.FromArray(scaled, t.ShapeArray).To(t.DType.IsFloatingPoint() ? t.DType : DType.Float32);
                what = $"'{name}' values edited";
                break;
            case 5:
                var values = t.To(DType.Float32).ToFloatArray();
                if (values.Length > 0) values[rng.Next(values.Length)] = new[] { float.NaN, float.PositiveInfinity, -1e30f, 1e9f }[rng.Next(4)];
                tensors[name] = Tensor.FromArray(values, t.ShapeArray).To(t.DType.IsFloatingPoint() ? t.DType : DType.Int64);
                what = $"'{name}' one value NaN/inf/huge";
                break;
            case 6:
                tensors[name] = Tensor.Zeros(t.DType, 0);
                what = $"'{name}' empty";
                break;
            case 7:
                var key = metadata.Keys.Order(StringComparer.Ordinal).ElementAtOrDefault(rng.Next(Math.Max(1, metadata.Count)));
                if (key is not null) metadata[key] = new[] { "", "garbage", "{\"x\": 1}" }[rng.Next(3)];
                what = $"metadata '{key}' edited";
                break;
            default:
                tensors["model.layers.99.mlp"] = Tensor.Zeros(DType.Float32, 1, 2, 3);
                what = "an extra module tensor";
                break;
        }
        File.Delete(path);
        SafetensorsWriter.Save(path, tensors, metadata);
        return what;
    }
}
