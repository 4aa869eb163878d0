using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.IO;

/// <summary>fixtures/io/sharded: a tiny bf16 LlamaForCausalLM saved by save_pretrained(max_shard_size="8KB") into two shards.</summary>
public class CheckpointTests
{
    private static string Sharded => IoFixtures.Path_("sharded");

    private static string CopyFixture(TempDir dir)
    {
        foreach (var f in Directory.GetFiles(Sharded)) File.Copy(f, Path.Combine(dir.Path, Path.GetFileName(f)));
        return dir.Path;
    }

    [Fact]
    public void Sharded_checkpoint_reads_the_values_torch_saved_and_opens_shards_lazily()
    {
        using var ck = Checkpoint.Open(Sharded);
        Assert.True(ck.IsSharded);
        Assert.Equal(21, ck.Names.Count);
        Assert.Equal(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], ck.ShardFiles);
        Assert.Equal(0, ck.OpenShardCount);

        var emb = ck.GetTensor("model.embed_tokens.weight");
        Assert.Equal(DType.BFloat16, emb.DType);
        Assert.Equal([32, 16], emb.ShapeArray);
        Assert.Equal(new ushort[] { 15336, 47917, 48390, 48456 }, emb.Span<ushort>()[..4].ToArray());
        Assert.Equal(1, ck.OpenShardCount);

        Assert.Equal(new ushort[] { 15446, 15309, 48210, 48160 }, ck.GetTensor("lm_head.weight").Span<ushort>()[..4].ToArray());
        var down = ck.GetTensor("model.layers.1.mlp.down_proj.weight");
        Assert.Equal([16, 32], down.ShapeArray);
        Assert.Equal(new ushort[] { 15391, 48223, 48324, 15541 }, down.Span<ushort>()[..4].ToArray());
        Assert.All(ck.GetTensor("model.norm.weight").ToFloatArray(), v => Assert.Equal(1f, v));
        Assert.Equal(2, ck.OpenShardCount);
    }

    [Fact]
    public void Single_file_checkpoint_is_found_and_preferred_over_an_index()
    {
        using var dir = new TempDir();
        SafetensorsWriter.Save(dir.File("model.safetensors"), new Dictionary<string, Tensor> { ["w"] = Tensor.FromArray([1f, 2f], 2) });
        File.WriteAllText(dir.File("model.safetensors.index.json"), """{"weight_map": {"other": "nope.safetensors"}}""");
        using var ck = Checkpoint.Open(dir.Path);
        Assert.False(ck.IsSharded);
        Assert.Equal(["w"], ck.Names);
        Assert.Equal([1f, 2f], ck.GetTensor("w").ToFloatArray());
        var e = Assert.Throws<TensorNotFoundException>(() => ck.GetTensor("W"));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void A_folder_without_weights_lists_what_it_holds()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), "{}");
        File.WriteAllText(dir.File("pytorch_model.bin"), "");
        var e = Assert.Throws<FileNotFoundException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("neither model.safetensors nor model.safetensors.index.json", e.Message);
        Assert.Contains("config.json, pytorch_model.bin", e.Message);
        Assert.Contains(dir.Path, e.Message);
    }

    [Fact]
    public void An_index_that_references_a_missing_shard_names_the_index_and_the_shard()
    {
        using var dir = new TempDir();
        CopyFixture(dir);
        File.Delete(dir.File("model-00002-of-00002.safetensors"));
        var e = Assert.Throws<SafetensorsFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("model.safetensors.index.json", e.Message);
        Assert.Contains("'model-00002-of-00002.safetensors', which is missing", e.Message);
        Assert.NotNull(e.TensorName);
    }

    [Fact]
    public void A_tensor_absent_from_the_index_is_named_with_near_names()
    {
        using var ck = Checkpoint.Open(Sharded);
        var e = Assert.Throws<TensorNotFoundException>(() => ck.GetTensor("model.layers.1.mlp.down_proj.weights"));
        Assert.Contains("model.safetensors.index.json", e.Message);
        Assert.Contains("'model.layers.1.mlp.down_proj.weights' in the index's weight_map", e.Message);
        Assert.Equal("model.layers.1.mlp.down_proj.weight", e.NearNames[0]);
    }

    [Fact]
    public void A_shard_lacking_a_tensor_the_index_claims_is_reported_with_index_shard_and_tensor()
    {
        using var dir = new TempDir();
        CopyFixture(dir);
        string index = dir.File("model.safetensors.index.json");
        // Claim that model.norm.weight lives in shard 1 while it is in shard 2.
        string text = File.ReadAllText(index);
        string shardOfNorm;
        using (var ck0 = Checkpoint.Open(Sharded)) shardOfNorm = ck0.ShardOf("model.norm.weight");
        string other = shardOfNorm == "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
        File.WriteAllText(index, text.Replace($"\"model.norm.weight\": \"{shardOfNorm}\"", $"\"model.norm.weight\": \"{other}\""));
        using var ck = Checkpoint.Open(dir.Path);
        var e = Assert.Throws<SafetensorsFormatException>(() => ck.GetTensor("model.norm.weight"));
        Assert.Contains("model.safetensors.index.json", e.Message);
        Assert.Contains($"shard '{other}'", e.Message);
        Assert.Equal("model.norm.weight", e.TensorName);
    }

    [Fact]
    public void A_corrupt_shard_is_reported_when_first_used_naming_the_shard()
    {
        using var dir = new TempDir();
        CopyFixture(dir);
        File.WriteAllBytes(dir.File("model-00002-of-00002.safetensors"), [1, 2, 3]);
        using var ck = Checkpoint.Open(dir.Path);
        string inShard2 = ck.Names.First(n => ck.ShardOf(n) == "model-00002-of-00002.safetensors");
        var e = Assert.Throws<SafetensorsFormatException>(() => ck.GetTensor(inShard2));
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void A_shard_path_escaping_the_folder_is_refused()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("model.safetensors.index.json"), """{"weight_map": {"w": "../model.safetensors"}}""");
        var e = Assert.Throws<SafetensorsFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("not a plain file name", e.Message);
        Assert.Equal("w", e.TensorName);
    }
}
