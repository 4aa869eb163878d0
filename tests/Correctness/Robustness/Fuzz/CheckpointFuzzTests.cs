using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Xunit.Abstractions;

namespace Harness.Tests.Correctness.Robustness.Fuzz;

/// <summary>
/// Checkpoint-folder fuzzing on the recorded models, single-file and sharded (model.safetensors.index.json): truncated and
/// corrupted shards, headers edited (dtype, shape, offsets, names), an index naming missing files or tensors or the wrong
/// shard, tensors of the wrong shape or dtype for the config, unexpected tensors. The engine loads each mutant as
/// `compare` does and runs a forward: each ends in a pass or an error naming a file of the folder.
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class CheckpointFuzzTests(ITestOutputHelper output)
{
    [Fact]
    public void Every_checkpoint_mutant_ends_in_a_pass_or_an_error_naming_the_file()
    {
        var work = FuzzInputs.TempDirectory("checkpoint");
        try
        {
            // Bases: each recorded model as a single file, and the fp32 one sharded in two with an index.
            var bases = FuzzInputs.ModelFolders.Select((b, i) => { var d = Path.Combine(work, $"base{i}"); FuzzInputs.Reset(b, d); return d; }).ToList();
            var sharded = Path.Combine(work, "sharded");
            Shard(bases[0], sharded);
            bases.Add(sharded);
            var dir = Path.Combine(work, "mutant");
            int tp = 1;
            var campaign = new FuzzCampaign("checkpoint", output);
            campaign.Run(seed: 34, rng =>
            {
                var source = bases[rng.Next(bases.Count)];
                FuzzInputs.Reset(source, dir);
                tp = rng.Next(3) == 0 ? 2 : 1;
                var (kind, description) = source == sharded ? MutateSharded(dir, rng) : MutateSingle(dir, rng);
                return new FuzzCampaign.Mutant(kind, $"{Path.GetFileName(source)}, tp {tp}: {description}", dir);
            }, m => FuzzInputs.LoadAndRun(m.File, tp));
            Assert.True(campaign.Passed > 0 && campaign.Named > 0, campaign.Summary);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static (string, string) MutateSingle(string dir, Random rng)
    {
        var path = Path.Combine(dir, Checkpoint.SingleFileName);
        switch (rng.Next(7))
        {
            case 0:
                FuzzInputs.Truncate(path, rng);
                return ("truncate", "model.safetensors truncated");
            case 1:
                return ("header-bytes", FuzzInputs.FlipBytes(path, rng, 0, FuzzInputs.HeaderEnd(path)));
            case 2:
                return ("data-bytes", FuzzInputs.FlipBytes(path, rng, FuzzInputs.HeaderEnd(path), long.MaxValue));
            case 3:
                return ("header-edit", FuzzInputs.EditHeader(path, rng));
            default:
                return Rewrite(dir, path, rng);
        }
    }

    /// <summary>A well-formed safetensors file whose tensors do not fit the config: wrong shape, wrong dtype, extra or missing.</summary>
    private static (string, string) Rewrite(string dir, string path, Random rng)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using (var file = SafetensorsFile.Open(path))
            foreach (var n in file.Names) tensors[n] = file.ReadTensor(n);
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        var name = names[rng.Next(names.Count)];
        var t = tensors[name];
        string what;
        switch (rng.Next(6))
        {
            case 0:
                tensors[name] = Tensor.Zeros(t.DType, [.. t.ShapeArray.Select(d => d + 1)]);
                what = $"'{name}' one larger in every dim";
                break;
            case 1:
                tensors[name] = t.Reshape(-1);
                what = $"'{name}' flattened";
                break;
            case 2:
                var dt = t.DType == DType.Float32 ? DType.BFloat16 : DType.Float32;
                tensors[name] = t.To(dt);
                what = $"'{name}' stored as {dt}";
                break;
            case 3:
                tensors[name] = Tensor.Zeros(DType.Int64, t.ShapeArray);
                what = $"'{name}' stored as int64";
                break;
            case 4:
                var extra = rng.Next(2) == 0 ? "model.layers.0.self_attn.rotary_emb.inv_freq" : FuzzInputs.Misspell(name, rng);
                tensors[extra] = Tensor.Zeros(DType.Float32, 8);
                what = $"extra tensor '{extra}'";
                break;
            default:
                tensors.Remove(name);
                what = $"'{name}' removed";
                break;
        }
        File.Delete(path);
        SafetensorsWriter.Save(path, tensors);
        return ("rewrite", what);
    }

    private static (string, string) MutateSharded(string dir, Random rng)
    {
        var index = Path.Combine(dir, Checkpoint.IndexFileName);
        var shards = Directory.GetFiles(dir, "model-*.safetensors").Order(StringComparer.Ordinal).ToList();
        var shard = shards[rng.Next(shards.Count)];
        var root = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        var map = root["weight_map"]!.AsObject();
        var names = map.Select(kv => kv.Key).ToList();
        var name = names[rng.Next(names.Count)];
        string what;
        switch (rng.Next(10))
        {
            case 0:
                map[name] = "model-00009-of-00002.safetensors";
                what = $"index puts '{name}' in a missing file";
                break;
            case 1:
                map.Remove(name);
                what = $"index lacks '{name}'";
                break;
            case 2:
                var other = Path.GetFileName(shards.First(s => Path.GetFileName(s) != map[name]!.GetValue<string>()));
                map[name] = other;
                what = $"index puts '{name}' in the wrong shard {other}";
                break;
            case 3:
                map[FuzzInputs.Misspell(name, rng)] = map[name]!.GetValue<string>();
                map.Remove(name);
                what = $"index misspells '{name}'";
                break;
            case 4:
                var v = new[] { "../model.safetensors", "", "/etc/passwd", "sub/x.safetensors" }[rng.Next(4)];
                map[name] = v;
                what = $"index puts '{name}' in '{v}'";
                break;
            case 5:
                var text = File.ReadAllText(index);
                File.WriteAllText(index, text[..rng.Next(text.Length)]);
                return ("index-truncate", "index truncated");
            case 6:
                root["weight_map"] = JsonNode.Parse(FuzzInputs.Retypes[rng.Next(FuzzInputs.Retypes.Length)]);
                what = $"weight_map -> {root["weight_map"]?.ToJsonString() ?? "null"}";
                break;
            case 7:
                File.Delete(shard);
                return ("shard-missing", $"{Path.GetFileName(shard)} deleted");
            case 8:
                FuzzInputs.Truncate(shard, rng);
                return ("shard-truncate", $"{Path.GetFileName(shard)} truncated");
            default:
                return ("shard-header-edit", $"{Path.GetFileName(shard)}: {FuzzInputs.EditHeader(shard, rng)}");
        }
        File.WriteAllText(index, root.ToJsonString());
        return ("index-edit", what);
    }

    /// <summary>The folder's model.safetensors as two shards and an index, as transformers' save_pretrained writes them.</summary>
    private static void Shard(string source, string target)
    {
        Directory.CreateDirectory(target);
        File.Copy(Path.Combine(source, "config.json"), Path.Combine(target, "config.json"));
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using (var file = SafetensorsFile.Open(Path.Combine(source, Checkpoint.SingleFileName)))
            foreach (var n in file.Names) tensors[n] = file.ReadTensor(n);
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        var map = new JsonObject();
        for (int s = 0; s < 2; s++)
        {
            var shardName = $"model-0000{s + 1}-of-00002.safetensors";
            var part = names.Where((_, i) => i % 2 == s).ToDictionary(n => n, n => tensors[n], StringComparer.Ordinal);
            SafetensorsWriter.Save(Path.Combine(target, shardName), part, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var n in part.Keys) map[n] = shardName;
        }
        File.WriteAllText(Path.Combine(target, Checkpoint.IndexFileName), new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map }.ToJsonString());
    }
}
