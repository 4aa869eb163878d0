using System.Text.Json.Nodes;
using Harness.Engine.Capture;
using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Judge;
using Harness.Runs;
using Harness.Reference;

namespace Harness.Tests.Correctness.Judge;

/// <summary>
/// The dump format's writers and readers without a reference: `harness dump`'s placements (a TP shard inside PP keeps its
/// TP index and size, an SP slice its token window, a bf16 tensor its dtype), transformers' model debugger tree read as
/// rank 0's dump, and the bad inputs each names in one line (exit 2): a repr-valued debugger tree, a folder holding no
/// dump, a missing GGUF.
/// </summary>
public sealed class DumpFormatTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"dump-format-{Guid.NewGuid():N}");

    public DumpFormatTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Engine_dump_writes_each_world_rank_with_its_shard_rows_or_whole_placement_and_dtype()
    {
        var dump = new EngineDump();
        var x = Tensor.FromArray([1f, 2f, 3f, 4f], 1, 2, 2);
        dump.Record("model.embed_tokens", 0, x, ShardSpec.Whole);
        dump.Record("model.layers.2.self_attn.q_proj", 3, x, new ShardSpec.Sharded(-1, 1, 2));   // TP rank 1 of 2 on world rank 3 (PP stage 1)
        dump.Record("model.layers.0.mlp", 1, x.To(DType.BFloat16), new ShardSpec.Rows(4, 4, 1), step: 0);
        dump.Record("model.layers.0.mlp", 1, x, new ShardSpec.Rows(4, 4, 1), step: 0);           // a second call
        dump.Write(_dir, 4, new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray([5L, 6L], 2) }, null, null,
            new JsonObject { ["name"] = "harness", ["dtype"] = "float32" });

        Assert.Equal(4, Directory.GetFiles(_dir, "rank-*.json").Length);       // rank 2 recorded nothing and still has its file
        var rank3 = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "rank-3.json")))!;
        var q = rank3["entries"]![0]!;
        Assert.Equal("""{"kind":"shard","dim":-1,"index":1,"of":2,"source":"engine"}""", q["placement"]!.ToJsonString());
        var rank1 = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "rank-1.json")))!["entries"]!.AsArray();
        Assert.Equal("""{"kind":"rows","dim":1,"start":4,"count":4,"source":"engine"}""", rank1[0]!["placement"]!.ToJsonString());
        Assert.Equal(["bfloat16", "float32"], rank1.Select(e => (string)e!["dtype"]!));
        Assert.Equal([0, 1], rank1.Select(e => (int)e!["call"]!));
        Assert.Equal("""{"kind":"replicate","source":"engine"}""",
            JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "rank-0.json")))!["entries"]![0]!["placement"]!.ToJsonString());
        using var f = SafetensorsFile.Open(Path.Combine(_dir, "rank-0.safetensors"));
        Assert.Equal([1, 2], f.ReadTensor("input/input_ids/step0").ShapeArray);  // [1, T], as HF takes it
    }

    [Fact]
    public void Engine_dump_writes_the_token_each_decode_step_was_fed_and_refuses_steps_without_one()
    {
        var dump = new EngineDump();
        var x = Tensor.FromArray([1f, 2f], 1, 2);
        dump.Record("model.norm", 0, x, ShardSpec.Whole, step: 0);
        dump.Record("model.norm", 0, x, ShardSpec.Whole, step: 1);
        dump.Record("model.norm", 0, x, ShardSpec.Whole, step: 2);
        var inputs = new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray([5L, 6L], 2) };
        var engine = new JsonObject { ["name"] = "harness" };
        // records of decode step 2 but one fed token: the judge could not feed HF what the engine was fed
        Assert.Throws<InvalidOperationException>(() => dump.Write(_dir, 1, inputs, null, null, engine, [41L]));
        dump.Write(_dir, 1, inputs, null, null, engine, [41L, 42L, 43L]);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "rank-0.json")))!["inputs"]!;
        Assert.Equal(["0", "1", "2"], index.AsObject().Select(kv => kv.Key));
        using var f = SafetensorsFile.Open(Path.Combine(_dir, "rank-0.safetensors"));
        var fed = f.ReadTensor((string)index["2"]!["input_ids"]!);
        Assert.Equal([1, 1], fed.ShapeArray);                                   // [1, 1]: one token, as HF's decode step takes it
        Assert.Equal([42L], fed.ToInt64Array());
    }

    private void DumpWithDecodeStepInputs(JsonObject stepInputs, Tensor fedAtStep2)
    {
        var x = Tensor.FromArray([1f, 2f], 1, 1, 2);
        SafetensorsWriter.Save(Path.Combine(_dir, "rank-0.safetensors"), new Dictionary<string, Tensor>
        {
            ["input/input_ids/step0"] = Tensor.FromArray([5L, 6L], 1, 2), ["input/input_ids/step2"] = fedAtStep2,
            ["model.norm/step0/call0"] = x, ["model.norm/step1/call0"] = x, ["model.norm/step2/call0"] = x,
        });
        JsonObject Entry(int step) => new()
        {
            ["module"] = "model.norm", ["step"] = step, ["call"] = 0, ["tensor"] = $"model.norm/step{step}/call0",
            ["shape"] = new JsonArray(1, 1, 2), ["dtype"] = "float32", ["placement"] = new JsonObject { ["kind"] = "replicate" },
        };
        var inputs = new JsonObject { ["0"] = new JsonObject { ["input_ids"] = "input/input_ids/step0" } };
        foreach (var (k, v) in stepInputs) inputs[k] = v!.DeepClone();
        File.WriteAllText(Path.Combine(_dir, "rank-0.json"), new JsonObject
        {
            ["format"] = DumpJudge.Format, ["rank"] = 0, ["world_size"] = 1, ["tensors_file"] = "rank-0.safetensors",
            ["inputs"] = inputs, ["entries"] = new JsonArray(Entry(0), Entry(1), Entry(2)), ["errors"] = new JsonArray(),
        }.ToJsonString());
    }

    [Fact]
    public void A_decode_step_without_the_token_it_was_fed_is_named_before_any_reference_work()
    {
        DumpWithDecodeStepInputs(new JsonObject { ["2"] = new JsonObject { ["input_ids"] = "input/input_ids/step2" } }, Tensor.FromArray([7L], 1, 1));
        var client = new ReferenceClient(new ReferenceWorker("/nonexistent/python"));   // never started: the dump is refused first
        var e = Assert.Throws<InputException>(() => DumpJudge.Run(_dir, _dir, client));
        Assert.Contains("rank-0.json", e.Message, StringComparison.Ordinal);
        Assert.Contains("inputs[\"1\"].input_ids is missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_decode_step_fed_more_than_one_token_is_refused_naming_the_step()
    {
        DumpWithDecodeStepInputs(new JsonObject
        {
            ["1"] = new JsonObject { ["input_ids"] = "input/input_ids/step2" }, ["2"] = new JsonObject { ["input_ids"] = "input/input_ids/step2" },
        }, Tensor.FromArray([7L, 8L], 1, 2));
        var client = new ReferenceClient(new ReferenceWorker("/nonexistent/python"));
        var e = Assert.Throws<InputException>(() => DumpJudge.Run(_dir, _dir, client));
        Assert.Contains("inputs[\"1\"].input_ids is int64 [1, 2]: a decode step is fed one token id", e.Message, StringComparison.Ordinal);
    }

    private string DebuggerTree(bool repr, long[]? positionIds = null, string? maskShape = null)
    {
        void Save(string name, Tensor t) => SafetensorsWriter.Save(Path.Combine(_dir, name), new Dictionary<string, Tensor> { ["data"] = t });
        Save("M_inputs_kwargs_input_ids.safetensors", Tensor.FromArray([5L, 6L], 1, 2));
        Save("M.model.norm_outputs.safetensors", Tensor.FromArray([1f, 2f], 1, 2, 1));
        Save("M.model.rotary_emb_outputs_0.safetensors", Tensor.FromArray([3f, 4f], 1, 2, 1));
        Save("M.model.rotary_emb_outputs_1.safetensors", Tensor.FromArray([5f, 6f], 1, 2, 1));
        JsonObject Io(string file) => new() { ["shape"] = "torch.Size([1, 2, 1])", ["dtype"] = "torch.float32", ["value"] = repr ? "tensor([[1.]])" : "./" + file };
        var tree = new JsonObject
        {
            ["module_path"] = "M", ["inputs"] = new JsonObject { ["kwargs"] = new JsonObject { ["input_ids"] = Io("M_inputs_kwargs_input_ids.safetensors") } },
            ["outputs"] = null,
            ["children"] = new JsonArray(new JsonObject
            {
                ["module_path"] = "M.model", ["outputs"] = null, ["children"] = new JsonArray(
                    new JsonObject { ["module_path"] = "M.model.rotary_emb", ["outputs"] = new JsonArray(Io("M.model.rotary_emb_outputs_0.safetensors"), Io("M.model.rotary_emb_outputs_1.safetensors")) },
                    new JsonObject { ["module_path"] = "M.model.norm", ["outputs"] = Io("M.model.norm_outputs.safetensors") }),
            }),
        };
        var kwargs = tree["inputs"]!["kwargs"]!.AsObject();
        if (positionIds is not null)                                           // what generate() passes each forward
        {
            Save("M_inputs_kwargs_position_ids.safetensors", Tensor.FromArray(positionIds, 1, positionIds.Length));
            kwargs["position_ids"] = Io("M_inputs_kwargs_position_ids.safetensors");
        }
        if (maskShape is not null) kwargs["attention_mask"] = new JsonObject { ["shape"] = maskShape, ["dtype"] = "torch.int64", ["value"] = "./M_mask.safetensors" };
        var path = Path.Combine(_dir, "M" + ModelDebuggerDump.TreeSuffix);
        File.WriteAllText(path, tree.ToJsonString());
        return path;
    }

    [Fact]
    public void A_debugger_tree_of_a_decode_step_is_refused_naming_why_and_a_prompt_forward_under_generate_is_read()
    {
        // generate()'s prompt forward: positions from 0, a mask as long as the input: read as the prompt
        Assert.Equal(2, ModelDebuggerDump.Convert(DebuggerTree(repr: false, positionIds: [0, 1], maskShape: "torch.Size([1, 2])"), Path.Combine(_dir, "a")));
        // its last forward, the only one the debugger leaves after generate(): a step continuing the KV cache
        var tree = DebuggerTree(repr: false, positionIds: [9, 10]);
        var e = Assert.Throws<InputException>(() => ModelDebuggerDump.Convert(tree, Path.Combine(_dir, "b")));
        Assert.Contains(tree, e.Message, StringComparison.Ordinal);
        Assert.Contains("position_ids start at 9", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<InputException>(() => ModelDebuggerDump.Convert(DebuggerTree(repr: false, maskShape: "torch.Size([1, 10])"), Path.Combine(_dir, "c")));
        Assert.Contains("attention_mask torch.Size([1, 10]) covers more positions than the 2 it was fed", e.Message, StringComparison.Ordinal);
        Assert.Contains("harness_dump.py's generation()", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_model_debuggers_tree_becomes_rank_0_of_a_dump_under_named_modules_names()
    {
        var tree = DebuggerTree(repr: false);
        Assert.Equal(tree, ModelDebuggerDump.FindTree(_dir));
        var out_ = Path.Combine(_dir, "converted");
        Assert.Equal(2, ModelDebuggerDump.Convert(tree, out_));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(out_, "rank-0.json")))!;
        Assert.Equal(["model.rotary_emb", "model.norm"], index["entries"]!.AsArray().Select(e => (string)e!["module"]!));
        using var f = SafetensorsFile.Open(Path.Combine(out_, "rank-0.safetensors"));
        Assert.Equal([3f, 4f], f.ReadTensor("model.rotary_emb/step0/call0").ToFloatArray());   // a tuple's leading tensor
        Assert.Equal([5L, 6L], f.ReadTensor((string)index["inputs"]!["0"]!["input_ids"]!).ToInt64Array());
    }

    [Fact]
    public void A_debugger_tree_written_with_use_repr_is_refused_naming_the_option()
    {
        var tree = DebuggerTree(repr: true);
        var e = Assert.Throws<InputException>(() => ModelDebuggerDump.Convert(tree, Path.Combine(_dir, "converted")));
        Assert.Contains("use_repr=False", e.Message, StringComparison.Ordinal);
        Assert.Contains(tree, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_folder_with_neither_a_dump_nor_a_debugger_tree_is_named_with_both_formats()
    {
        var client = new ReferenceClient(new ReferenceWorker("/nonexistent/python"));
        var e = Assert.Throws<InputException>(() => DumpJudge.Run(_dir, _dir, client));
        Assert.Contains("rank-<R>.json", e.Message, StringComparison.Ordinal);
        Assert.Contains(ModelDebuggerDump.TreeSuffix, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_gguf_is_named_before_anything_runs()
    {
        var client = new ReferenceClient(new ReferenceWorker("/nonexistent/python"));
        var missing = Path.Combine(_dir, "none.gguf");
        var e = Assert.Throws<InputException>(() => LlamaCppDump.Write(client, missing, [1L, 2L]));
        Assert.Contains(missing, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Llama_cpps_choices_at_a_near_tie_pass_and_the_steps_after_it_are_compared_on_its_forced_run()
    {
        // llama.cpp fed the reference's tokens 10, 20, 30, 40; at step 1 it prefers 21 by 0.01 nats over 20 (a near tie),
        // then agrees again on the history it was fed: the catalog's rule accepts the tie and compares steps 2-3 forced
        static IReadOnlyList<TokenLogprob> Top(long a, double la, long b, double lb) => [new(a, la), new(b, lb)];
        var reference = new TokenSequence([10, 20, 30, 40], [Top(10, -0.5, 11, -2), Top(20, -0.70, 21, -0.71), Top(30, -0.4, 31, -3), Top(40, -0.3, 41, -4)]);
        var llama = new TokenSequence([10, 21, 30, 40], [Top(10, -0.5, 11, -2), Top(21, -0.70, 20, -0.71), Top(30, -0.4, 31, -3), Top(40, -0.3, 41, -4)]);
        var (free, forced) = LlamaCppDump.Runs(reference, llama);
        Assert.Equal([10L, 21L], free.Tokens);                                 // the free run leaves the reference's tokens at step 1
        Assert.Same(llama, forced);
        var report = TokenComparison.ForScenario(reference, free, DType.Float32, forced);
        Assert.Equal(TokenVerdict.AcceptedDivergence, report.Verdict);
        Assert.Equal(2, report.ForcedSteps);
        // a clear divergence (the reference's token not in llama.cpp's top-k) fails at its step
        var wrong = new TokenSequence([10, 25, 30, 40], [Top(10, -0.5, 11, -2), Top(25, -0.1, 26, -3), Top(30, -0.4, 31, -3), Top(40, -0.3, 41, -4)]);
        var (free2, forced2) = LlamaCppDump.Runs(reference, wrong);
        var failed = TokenComparison.ForScenario(reference, free2, DType.Float32, forced2);
        Assert.Equal(TokenVerdict.Failed, failed.Verdict);
        Assert.Equal(1, failed.FirstDivergentStep);
        // no divergence: the forced run is not handed over
        Assert.Null(LlamaCppDump.Runs(reference, reference).Forced);
    }
}
