using Harness.Engine.IO;
using Harness.Engine.Models;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// The KV cache's bookkeeping and the checkpoint validator's report, at the edges no catalog model reaches (a cache
/// filled to exactly its capacity, a rewind to either end, a checkpoint with 64 problems, four, an optional tensor, a
/// dtype the engine does not compute in, an aliased prefix): the Stryker.NET mutants of src/Engine/Models/KvCache.cs
/// and ModelTensors.cs that the catalog and CheckpointValidatorTests let through (notes/issue-21-mutkernels.md).
/// </summary>
public sealed class ModelPlumbingMutationTests : IDisposable
{
    // ---------------------------------------------------------------- KvCache

    private static Tensor Ramp(int heads, int tokens, int hd, float start) =>
        Tensor.FromArray(Enumerable.Range(0, heads * tokens * hd).Select(i => start + i).ToArray(), heads, tokens, hd);

    [Fact]
    public void A_kv_cache_fills_to_exactly_its_capacity_and_not_one_more()
    {
        // mutants: `Length + n > capacity` as `>=`, `<`, negated or `Length - n`; the copies removed; `Length += n` as `-=`;
        // the message emptied; the host/device choice inverted
        var cache = new KvCache(kvHeads: 2, headDim: 3, capacity: 5, DType.Float32);
        Assert.Equal(5, cache.Capacity);
        Assert.Equal(new[] { 2, 5, 3 }, cache.Keys.ShapeArray);
        Assert.Equal(new[] { 2, 5, 3 }, cache.Values.ShapeArray);
        cache.Append(Ramp(2, 3, 3, 0), Ramp(2, 3, 3, 100));
        Assert.Equal(3, cache.Length);
        cache.Append(Ramp(2, 2, 3, 50), Ramp(2, 2, 3, 150));   // 3 + 2 == capacity: accepted
        Assert.Equal(5, cache.Length);
        var (k, v) = cache.Filled;
        Assert.Equal(new[] { 2, 5, 3 }, k.ShapeArray);
        Assert.True(k.BitwiseEquals(Tensor.Cat([Ramp(2, 3, 3, 0), Ramp(2, 2, 3, 50)], 1)), "keys in append order");
        Assert.True(v.BitwiseEquals(Tensor.Cat([Ramp(2, 3, 3, 100), Ramp(2, 2, 3, 150)], 1)), "values in append order");
        var ex = Assert.Throws<InvalidOperationException>(() => cache.Append(Ramp(2, 1, 3, 0), Ramp(2, 1, 3, 0)));
        Assert.Equal("KV cache of 5 positions cannot take 1 more after 5", ex.Message);
        Assert.Equal(5, cache.Length);

        var small = new KvCache(1, 2, 2, DType.Float32);
        small.Append(Ramp(1, 1, 2, 0), Ramp(1, 1, 2, 0));
        Assert.Throws<InvalidOperationException>(() => small.Append(Ramp(1, 2, 2, 0), Ramp(1, 2, 2, 0)));   // 1 + 2 > 2
    }

    [Fact]
    public void Advance_takes_zero_to_the_free_rows_and_refuses_negative_or_too_many()
    {
        // mutants: `n < 0` as `n <= 0` or `n > 0`, `||` as `&&`, the bound as `>=`/`<`/`Length - n`, the throw removed,
        // its message emptied, `Length += n` as `-=`
        var cache = new KvCache(1, 2, 4, DType.Float32);
        cache.Advance(0);
        Assert.Equal(0, cache.Length);
        cache.Advance(3);
        Assert.Equal(3, cache.Length);
        cache.Advance(1);   // exactly to the capacity
        Assert.Equal(4, cache.Length);
        var over = Assert.Throws<InvalidOperationException>(() => cache.Advance(1));
        Assert.Equal("KV cache of 4 positions cannot take 1 more after 4", over.Message);
        cache.Reset(1);
        var negative = Assert.Throws<InvalidOperationException>(() => cache.Advance(-1));
        Assert.Equal("KV cache of 4 positions cannot take -1 more after 1", negative.Message);
        Assert.Equal(1, cache.Length);
        Assert.Throws<InvalidOperationException>(() => cache.Advance(4));
    }

    [Fact]
    public void Reset_rewinds_to_any_length_from_zero_to_the_capacity()
    {
        // mutants: `length < 0` as `<= 0`/`> 0`, `length > capacity` as `>=`/`<`, `||` as `&&`, the throw removed, the
        // message emptied
        var cache = new KvCache(1, 2, 4, DType.BFloat16);
        cache.Advance(3);
        cache.Reset();
        Assert.Equal(0, cache.Length);
        cache.Reset(4);
        Assert.Equal(4, cache.Length);
        cache.Reset(2);
        Assert.Equal(2, cache.Length);
        var low = Assert.Throws<ArgumentOutOfRangeException>(() => cache.Reset(-1));
        Assert.StartsWith("KV cache length -1 outside [0, 4]", low.Message);
        var high = Assert.Throws<ArgumentOutOfRangeException>(() => cache.Reset(5));
        Assert.StartsWith("KV cache length 5 outside [0, 4]", high.Message);
        Assert.Equal(2, cache.Length);
    }

    // ---------------------------------------------------------------- CheckpointValidator

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "harness-plumbing-" + Guid.NewGuid().ToString("N"));

    public ModelPlumbingMutationTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Checkpoint Save(Dictionary<string, Tensor> tensors)
    {
        SafetensorsWriter.Save(Path.Combine(_dir, "model.safetensors"), tensors);
        return Checkpoint.Open(_dir);
    }

    private static ExpectedTensor T(string name, params int[] shape) => new(name, shape, "from");

    private static ModelTensors Model(IEnumerable<ExpectedTensor> tensors, string[]? suffixes = null, string[]? prefixes = null) =>
        new("M", "cfg.json", tensors, suffixes ?? [], prefixes);

    [Fact]
    public void A_checkpoint_that_fits_passes_and_each_kind_of_problem_is_named()
    {
        // mutants: the shape check inverted or its problem dropped/emptied, the dtype rules (the first present tensor's
        // dtype is the model's; an explicit dtype wins; F16 is not computed in), declared names added, optional tensors,
        // `continue` after a missing one
        var w = new Dictionary<string, Tensor>
        {
            ["a.weight"] = Tensor.Zeros(DType.Float32, 2, 3),
            ["b.weight"] = Tensor.Zeros(DType.Float32, 4),
            ["c.ids"] = Tensor.Zeros(DType.Int64, 4),
        };
        using (var ok = Save(w))
        {
            var model = Model([T("a.weight", 2, 3), T("b.weight", 4), new("c.ids", [4], "from", DType.Int64), T("opt.weight", 9) with { Optional = true }]);
            Assert.Empty(CheckpointValidator.Problems(ok, model));
            CheckpointValidator.Validate(ok, model);   // no throw
            CheckpointValidator.Validate(_dir, model);
        }

        w["a.weight"] = Tensor.Zeros(DType.Float32, 3, 2);
        w["b.weight"] = Tensor.Zeros(DType.BFloat16, 4);
        w["c.ids"] = Tensor.Zeros(DType.Int32, 4);
        w["opt.weight"] = Tensor.Zeros(DType.Float32, 8);
        using (var bad = Save(w))
        {
            var model = Model([T("a.weight", 2, 3), T("b.weight", 4), new("c.ids", [4], "from", DType.Int64), T("opt.weight", 9) with { Optional = true }]);
            Assert.Equal(
            [
                "'a.weight' is [3, 2], the config implies [2, 3] (from)",
                "'b.weight' is BF16, the model's tensors are F32",
                "'c.ids' is I32, the model's tensors are I64",
                "'opt.weight' is [8], the config implies [9] (from)",
            ], CheckpointValidator.Problems(bad, model));
        }

        w.Clear();
        w["h.weight"] = Tensor.Zeros(DType.Float16, 2);
        w["i.weight"] = Tensor.Zeros(DType.Float16, 2);
        using (var half = Save(w))
            Assert.Equal(["'h.weight' is F16; the engine computes M in F32 or BF16"],
                CheckpointValidator.Problems(half, Model([T("h.weight", 2), T("i.weight", 2)])));
    }

    [Fact]
    public void Missing_tensors_come_with_their_close_names_and_unexpected_ones_with_the_missing_they_resemble()
    {
        // mutants: the missing placeholder and its fill loop (`continue`, m++, the bound), the close names' source
        // (unexpected names first, else every name), the "(close: ...)" suffixes, declared names kept out of the
        // unexpected ones, ignored suffixes and prefixes (Any as All, the `??`), the unexpected problem dropped
        var w = new Dictionary<string, Tensor>
        {
            ["layer.0.wieght"] = Tensor.Zeros(DType.Float32, 2),
            ["layer.1.weight"] = Tensor.Zeros(DType.Float32, 2),
            ["rotary.inv_freq"] = Tensor.Zeros(DType.Float32, 2),
            ["tower.x"] = Tensor.Zeros(DType.Float32, 2),
            ["qq"] = Tensor.Zeros(DType.Float32, 2),
        };
        using var ckpt = Save(w);
        var model = Model([T("layer.0.weight", 2), T("layer.1.weight", 2), T("zzz", 7)], [".inv_freq"], ["tower."]);
        Assert.Equal(
        [
            "'layer.0.weight' [2] is missing (close: 'layer.0.wieght')",
            "'zzz' [7] is missing",
            "unexpected tensor 'layer.0.wieght' (close to the missing 'layer.0.weight': a misspelt prefix?)",
            "unexpected tensor 'qq'",
        ], CheckpointValidator.Problems(ckpt, model));

        // nothing unexpected: the close names come from every name in the checkpoint
        var noExtras = Model([T("layer.1.weight", 2), T("layer.1.weigh", 2)], [".inv_freq", ".wieght", "qq"], ["tower."]);
        Assert.Equal(["'layer.1.weigh' [2] is missing (close: 'layer.1.weight')"], CheckpointValidator.Problems(ckpt, noExtras));

        // no ignored prefixes at all (null): the tower's tensor is unexpected
        var noPrefixes = Model([T("layer.0.wieght", 2), T("layer.1.weight", 2), T("qq", 2)], [".inv_freq"], null);
        Assert.Equal(["unexpected tensor 'tower.x'"], CheckpointValidator.Problems(ckpt, noPrefixes));
    }

    [Fact]
    public void A_declared_tensor_is_found_under_its_stored_prefix()
    {
        // mutants: StoredName's `contains(declared)` negated, the prefix test `&&` as `||` or negated
        var w = new Dictionary<string, Tensor>
        {
            ["model.embed.weight"] = Tensor.Zeros(DType.Float32, 2),
            ["model.language_model.norm.weight"] = Tensor.Zeros(DType.Float32, 2),
            ["visual.proj.weight"] = Tensor.Zeros(DType.Float32, 2),
        };
        using var ckpt = Save(w);
        var model = Model([T("model.language_model.embed.weight", 2), T("model.language_model.norm.weight", 2), T("model.visual.proj.weight", 2)])
            with { StoredPrefixes = [("model.language_model.", "model."), ("model.visual.", "visual.")] };
        Assert.Empty(CheckpointValidator.Problems(ckpt, model));
        Assert.Equal("model.embed.weight", model.StoredName(ckpt.Contains, "model.language_model.embed.weight"));
        Assert.Equal("model.language_model.norm.weight", model.StoredName(ckpt.Contains, "model.language_model.norm.weight"));
        Assert.Equal("visual.proj.weight", model.StoredName(ckpt.Contains, "model.visual.proj.weight"));
        Assert.Equal("model.visual.other", model.StoredName(ckpt.Contains, "model.visual.other"));   // no alias held: the declared name
        Assert.Equal("other.embed.weight", model.StoredName(ckpt.Contains, "other.embed.weight"));
        Assert.Equal("model.language_model.x", model.StoredName(_ => false, "model.language_model.x"));
    }

    [Fact]
    public void Sixty_four_problems_are_all_listed_and_the_sixty_fifth_stops_the_count()
    {
        // mutants: `problems.Count >= MaxProblems` as `>` or negated, `complete = false` as true, the break removed, the
        // closing "(more not checked ...)" line
        using var ckpt = Save(new Dictionary<string, Tensor> { ["extra"] = Tensor.Zeros(DType.Float32, 1) });
        var exactly = CheckpointValidator.Problems(ckpt, Model(Enumerable.Range(0, 64).Select(i => T($"t{i}", 1))));
        Assert.Equal(65, exactly.Count);   // 64 missing, then the unexpected one (the whole declaration was seen)
        Assert.Equal("unexpected tensor 'extra'", exactly[^1].Split(" (close")[0]);

        var more = CheckpointValidator.Problems(ckpt, Model(Enumerable.Range(0, 66).Select(i => T($"t{i}", 1))));
        Assert.Equal(65, more.Count);
        Assert.StartsWith("'t63' [1] is missing", more[63]);
        Assert.Equal("(more not checked: the first 64 problems are listed)", more[^1]);
    }

    [Fact]
    public void The_mismatch_message_counts_each_kind_and_lists_the_first_three()
    {
        // mutants: each count's test (`> 0` as `>= 0`, `< 0`, negated), its text, the wrong-shape count's arithmetic,
        // "more not checked", Take(3) as Skip(3), the "; and N more" tail and its `> 3`
        string Message(params string[] problems) => new CheckpointMismatchException("f.safetensors", "cfg.json", problems).Message;
        Assert.Equal("f.safetensors: the weights do not match cfg.json (1 missing): 'a' [1] is missing",
            Message("'a' [1] is missing"));
        Assert.Equal("f.safetensors: the weights do not match cfg.json (2 missing, 1 unexpected): 'a' [1] is missing (close: 'b'); 'c' [1] is missing; unexpected tensor 'b'",
            Message("'a' [1] is missing (close: 'b')", "'c' [1] is missing", "unexpected tensor 'b'"));
        Assert.Equal("f.safetensors: the weights do not match cfg.json (1 unexpected, 3 of the wrong shape or dtype): 'x' is BF16, the model's tensors are F32; 'y' is [2], the config implies [3] (z); 'w' is [1], the config implies [3] (z); and 1 more",
            Message("'x' is BF16, the model's tensors are F32", "'y' is [2], the config implies [3] (z)", "'w' is [1], the config implies [3] (z)", "unexpected tensor 'q'"));
        Assert.Equal("f.safetensors: the weights do not match cfg.json (1 of the wrong shape or dtype, more not checked): 'x' is BF16, the model's tensors are F32; (more not checked: the first 64 problems are listed)",
            Message("'x' is BF16, the model's tensors are F32", "(more not checked: the first 64 problems are listed)"));
        Assert.Equal("f.safetensors: the weights do not match cfg.json (3 missing): 'a' [1] is missing; 'b' [1] is missing; 'c' [1] is missing",
            Message("'a' [1] is missing", "'b' [1] is missing", "'c' [1] is missing"));
        var e = new CheckpointMismatchException("f.safetensors", "cfg.json", ["'a' [1] is missing"]);
        Assert.Equal("f.safetensors", e.InputPath);
        Assert.Equal(["'a' [1] is missing"], e.Problems);
    }

    [Fact]
    public void Validate_throws_naming_the_checkpoint_file_or_its_index()
    {
        // mutants: `problems.Count > 0` as `>= 0` or negated, the throw removed, IndexPath ?? the single file's path
        using (var single = Save(new Dictionary<string, Tensor> { ["a"] = Tensor.Zeros(DType.Float32, 1) }))
        {
            var e = Assert.Throws<CheckpointMismatchException>(() => CheckpointValidator.Validate(single, Model([T("b", 1)])));
            Assert.Equal(Path.Combine(single.Folder, "model.safetensors"), e.InputPath);
            Assert.StartsWith($"{Path.Combine(single.Folder, "model.safetensors")}: the weights do not match cfg.json (1 missing, 1 unexpected)", e.Message);
        }
        var e2 = Assert.Throws<CheckpointMismatchException>(() => CheckpointValidator.Validate(_dir, Model([T("b", 1)])));
        Assert.EndsWith("model.safetensors", e2.InputPath);

        // a sharded checkpoint: the index file is named
        var shard = Path.Combine(_dir, "sharded");
        Directory.CreateDirectory(shard);
        SafetensorsWriter.Save(Path.Combine(shard, "model-00001-of-00001.safetensors"), new Dictionary<string, Tensor> { ["a"] = Tensor.Zeros(DType.Float32, 1) });
        File.WriteAllText(Path.Combine(shard, "model.safetensors.index.json"), """{"metadata": {}, "weight_map": {"a": "model-00001-of-00001.safetensors"}}""");
        using var sharded = Checkpoint.Open(shard);
        var e3 = Assert.Throws<CheckpointMismatchException>(() => CheckpointValidator.Validate(sharded, Model([T("b", 1)])));
        Assert.Equal(sharded.IndexPath, e3.InputPath);
        Assert.EndsWith("model.safetensors.index.json", e3.InputPath);
    }
}
