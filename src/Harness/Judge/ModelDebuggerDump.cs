using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Engine.Tensors;

namespace Harness.Judge;

/// <summary>
/// transformers' model debugger output read as a dump: `model_addition_debugger_context(model, debug_path=DIR,
/// use_repr=False)` writes <c>&lt;Class&gt;_debug_tree_FULL_TENSORS.json</c>, a call tree whose leaf modules' outputs
/// point at one safetensors file each (key "data"; a tuple output is a list of such, the first taken as the module's
/// output, as harness_dump.py takes a tuple's leading tensor), and the top-level call's inputs (input_ids or
/// inputs_embeds). <see cref="Convert"/> writes it in the harness dump format, rank 0 of 1 (the debugger records on rank 0
/// only), modules named as <c>named_modules()</c> names them (the class name prefix dropped). What the debugger does not
/// keep, the judge cannot judge: modules with children have no output there, a module called twice in one forward keeps
/// its last call's file (same file name), do_prune_layers (its default) keeps only some of the repeated layers, and a
/// generate() leaves its last forward only (every top-level forward rewrites the tree and the files): such a tree, a
/// decode step without its history, is refused (<see cref="RefuseDecodeStep"/>).
/// </summary>
public static class ModelDebuggerDump
{
    public const string TreeSuffix = "_debug_tree_FULL_TENSORS.json";

    /// <summary>The debugger's tree file in a folder, or null when there is none (a harness dump, or nothing).</summary>
    public static string? FindTree(string directory)
    {
        var trees = Directory.GetFiles(directory, "*" + TreeSuffix);
        if (trees.Length > 1) throw new InputException(directory, $"{trees.Length} model debugger trees ({string.Join(", ", trees.Select(Path.GetFileName))}); keep one");
        return trees.Length == 1 ? trees[0] : null;
    }

    /// <summary>
    /// A tree whose top-level forward continued a KV cache (its position_ids or cache_position start past 0, or its
    /// attention_mask covers more positions than it was fed) is a decode step, and the debugger cannot carry decode steps:
    /// transformers 5.12.1's model_debugging_utils.py rewrites the whole record on every top-level forward
    /// (top_wrapped_forward, line 357, replaces model._call_tree's children, line 383, and calls log_model_debug_trace,
    /// line 391, which opens the same &lt;Class&gt;_debug_tree_FULL_TENSORS.json with "w", line 243), and each module's tensors
    /// go to a file named by its module path alone (path_to_value f"{full_path}_outputs", line 333; save_file, line 96),
    /// so each forward overwrites the one before. After generate() the folder holds its last forward only, a decode step
    /// fed one token, without the prompt or the tokens before it, on which HF cannot be rerun. Refused, naming this.
    /// </summary>
    private static void RefuseDecodeStep(string treePath, JsonNode? inputs, Tensor input, Func<JsonNode?, string, Tensor> read)
    {
        var kwargs = inputs?["kwargs"] as JsonObject;
        int fed = input.Shape.Length >= 2 ? input.Shape[1] : input.Shape[0];
        string? why = null;
        foreach (var name in new[] { "cache_position", "position_ids" })
            if (why is null && kwargs?[name] is JsonObject { } io && io["value"] is JsonValue)
            {
                var values = read(io, "the top-level input " + name).ToInt64Array();
                if (values.Length > 0 && values[0] > 0) why = $"its {name} start at {values[0]}";
            }
        // the mask's "shape" as the debugger writes it: "torch.Size([1, 10])"
        if (why is null && (string?)kwargs?["attention_mask"]?["shape"] is { } shape
            && System.Text.RegularExpressions.Regex.Match(shape, @"(\d+)\]\)$") is { Success: true } m
            && int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > fed)
            why = $"its attention_mask {shape} covers more positions than the {fed} it was fed";
        if (why is not null)
            throw new InputException(treePath,
                $"the tree's forward continues a KV cache ({why}): a decode step, the last forward of a generate(); transformers' model " +
                "debugger rewrites its tree and every module's file on each top-level forward (model_debugging_utils.py 5.12.1, lines " +
                "243, 333, 383, 391), so the prompt and the steps before are gone. Run it around one model.forward of the prompt, " +
                "or dump generate() with harness_dump.py's generation()");
    }

    /// <summary>Writes the debugger's tree <paramref name="treePath"/> as rank-0.{safetensors,json} in <paramref name="outDirectory"/>.</summary>
    public static int Convert(string treePath, string outDirectory)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(treePath))!;
        JsonObject root;
        try
        {
            root = JsonNode.Parse(InputFiles.ReadCapped(treePath, InputFiles.RecordMaxBytes, "model debugger tree")) as JsonObject ?? throw new InputException(treePath, "is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InputException(treePath, $"is not JSON: {e.Message.Split('\n')[0]}", e);
        }
        var className = Path.GetFileName(treePath)[..^TreeSuffix.Length];
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var entries = new JsonArray();
        var calls = new Dictionary<string, int>(StringComparer.Ordinal);

        Tensor Read(JsonNode? io, string what)
        {
            var value = (string?)io?["value"] ?? throw new InputException(treePath, $"{what} has no \"value\" (was the debugger run with use_repr=False?)");
            if (!value.EndsWith(".safetensors", StringComparison.Ordinal))
                throw new InputException(treePath, $"{what}'s value is a repr, not a file: run model_addition_debugger_context with use_repr=False");
            var path = Path.GetFullPath(Path.Combine(dir, value));
            if (!path.StartsWith(dir + "/", StringComparison.Ordinal)) throw new InputException(treePath, $"{what} points outside the folder: {value}");
            using var file = SafetensorsFile.Open(path);
            return file.ReadTensor("data");
        }

        // the top-level call's inputs: input_ids (or inputs_embeds) as a keyword, else the first positional argument
        var inputs = root["inputs"];
        string inputName = "input_ids";
        JsonNode? input = inputs?["kwargs"]?["input_ids"];
        if (input is null && inputs?["kwargs"]?["inputs_embeds"] is { } embeds) (input, inputName) = (embeds, "inputs_embeds");
        input ??= inputs?["args"] is JsonArray { Count: > 0 } args ? args[0] : null;
        if (input is null) throw new InputException(treePath, "the top-level call's inputs have no input_ids or inputs_embeds");
        tensors["input/" + inputName + "/step0"] = Read(input, "the top-level input " + inputName);
        RefuseDecodeStep(treePath, inputs, tensors["input/" + inputName + "/step0"], Read);

        void Walk(JsonNode? node)
        {
            if (node is not JsonObject n) return;
            var path = (string?)n["module_path"] ?? "";
            var outputs = n["outputs"];
            if (outputs is JsonArray list) outputs = list.Count > 0 ? list[0] : null;      // a tuple: its leading tensor
            if (outputs is JsonObject o && o["value"] is JsonValue && path.StartsWith(className + ".", StringComparison.Ordinal))
            {
                var module = path[(className.Length + 1)..];
                var t = Read(o, module);
                if (t.DType is DType.Float32 or DType.BFloat16 or DType.Float16)
                {
                    int call = calls.GetValueOrDefault(module);
                    calls[module] = call + 1;
                    var key = $"{module}/step0/call{call}";
                    tensors[key] = t;
                    entries.Add(new JsonObject
                    {
                        ["module"] = module, ["step"] = 0, ["call"] = call, ["tensor"] = key,
                        ["shape"] = new JsonArray(t.ShapeArray.Select(d => (JsonNode)d).ToArray()), ["dtype"] = t.DType.TorchName(),
                        ["placement"] = new JsonObject { ["kind"] = "replicate", ["source"] = "model debugger (rank 0)" },
                    });
                }
            }
            foreach (var c in n["children"] as JsonArray ?? []) Walk(c);
        }
        Walk(root);
        if (entries.Count == 0) throw new InputException(treePath, "the debugger's tree records no module output");

        Directory.CreateDirectory(outDirectory);
        SafetensorsWriter.Save(Path.Combine(outDirectory, "rank-0.safetensors"), tensors);
        var index = new JsonObject
        {
            ["format"] = DumpJudge.Format, ["rank"] = 0, ["world_size"] = 1, ["tensors_file"] = "rank-0.safetensors",
            ["inputs"] = new JsonObject { ["0"] = new JsonObject { [inputName] = "input/" + inputName + "/step0" } },
            ["entries"] = entries, ["errors"] = new JsonArray(),
            ["engine"] = new JsonObject { ["name"] = "transformers model debugger", ["tree"] = Path.GetFullPath(treePath) },
        };
        AtomicFile.WriteAllBytes(Path.Combine(outDirectory, "rank-0.json"), JsonSerializer.SerializeToUtf8Bytes(index, new JsonSerializerOptions { WriteIndented = true }));
        return entries.Count;
    }
}
