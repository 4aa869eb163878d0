using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Reference;

namespace Harness.Judge;

/// <summary>What llamacpp_dump.py wrote: the mapped modules' count, the llama.cpp names with no HF module, the model.</summary>
public sealed record LlamaCppDumpResult(string Directory, int Entries, IReadOnlyList<string> Unmapped, string Description);

/// <summary>
/// llama.cpp module by module: a GGUF's prompt forward through libllama with the scheduler's evaluation callback
/// (src/Reference/python/llamacpp_dump.py, run by a worker of the reference interpreter, since Debian forky's libllama
/// needs forky's glibc), its named graph outputs written in the harness dump format under HF's module names (the one
/// map, LLAMA_TO_HF in that file, with the converter's Q/K rotary permutation undone), then judged by
/// <see cref="DumpJudge"/> like any other dump. The context is float32 throughout (no flash attention, f32 K/V cache).
/// </summary>
public static class LlamaCppDump
{
    /// <summary>Writes the dump of <paramref name="ggufHostPath"/> on <paramref name="inputIds"/> into a fresh scratch
    /// folder (or <paramref name="outDirectory"/>, which must be one the worker can write). <paramref name="llamaLayout"/>:
    /// Q and K left in llama.cpp's rotary row order (the converter's permutation not undone; the judge fails them).</summary>
    public static LlamaCppDumpResult Write(ReferenceClient client, string ggufHostPath, IReadOnlyList<long> inputIds, string? outDirectory = null,
        int threads = 1, bool llamaLayout = false)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(inputIds);
        var gguf = Path.GetFullPath(ggufHostPath);
        InputFiles.RequireRegular(gguf, "GGUF file");
        if (inputIds.Count == 0) throw new InputException("--ids", "the prompt has no token");
        var dir = outDirectory ?? client.ScratchDirectory("judge-llamacpp-dump");
        string source;
        using (var s = typeof(ReferenceWorker).Assembly.GetManifestResourceStream("llamacpp_dump.py")
            ?? throw new InvalidOperationException("llamacpp_dump.py is not embedded in Harness.Reference"))
        using (var r = new StreamReader(s))
            source = r.ReadToEnd();
        var reply = client.Invoke("judge_llamacpp_dump", new JsonObject
        {
            ["gguf"] = client.WorkerPath(gguf),
            ["out_dir"] = client.WorkerPath(dir),
            ["input_ids"] = new JsonArray(inputIds.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
            ["script_source"] = source,
            ["threads"] = threads,
            ["llama_layout"] = llamaLayout,
            ["timeout"] = 120,
        }).Result;
        return new LlamaCppDumpResult(dir, (int)reply["entries"]!,
            reply["unmapped"]!.AsArray().Select(n => (string)n!).ToArray(),
            (string?)reply["engine"]?["model"] ?? "");
    }
}
