using System.Text;
using System.Text.Json.Nodes;
using Harness.Engine.Config;
using Harness.Engine.Distributed;
using Harness.Engine.IO;
using Harness.Engine.Models.Llama;
using Harness.Engine.ParallelLayers;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Robustness.Fuzz;

/// <summary>What the fuzz campaigns share: the recorded models, folder copies, JSON and safetensors-header mutations, and the engine run.</summary>
internal static class FuzzInputs
{
    public static string FixturesDirectory => Harness.Scenarios.Fixtures.DefaultDirectory();

    /// <summary>The recorded models of every model type a folder can hold today (ModelFolder.Models: llama).</summary>
    public static IReadOnlyList<string> ModelFolders =>
        Directory.GetDirectories(Path.Combine(FixturesDirectory, "models")).Where(d => File.Exists(Path.Combine(d, "config.json")))
            .Where(d => JsonNode.Parse(File.ReadAllText(Path.Combine(d, "config.json")))!["model_type"]?.GetValue<string>() is { } t
                        && Harness.Scenarios.ModelFolder.Models.ContainsKey(t))
            .Order(StringComparer.Ordinal).ToList();

    public static string TempDirectory(string what)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"harness-fuzz-{what}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Makes <paramref name="target"/> an exact copy of <paramref name="source"/> (files only).</summary>
    public static void Reset(string source, string target)
    {
        if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
        Directory.CreateDirectory(target);
        foreach (var f in Directory.GetFiles(source)) File.Copy(f, Path.Combine(target, Path.GetFileName(f)));
    }

    /// <summary>The engine loads the folder as `compare` does (ModelFolder.Check) and runs a 4-token forward at this TP.</summary>
    public static void LoadAndRun(string dir, int tp)
    {
        var config = Harness.Scenarios.ModelFolder.Check(dir, tp).Text;
        ThreadWorld.Run(tp, rank =>
        {
            var ctx = ThreadWorld.Layout(rank, tp, 1);
            using var checkpoint = Checkpoint.Open(dir);
            var model = new LlamaForCausalLM(new CheckpointWeights(checkpoint), config, ctx, maxPositions: 16);
            var ids = Tensor.FromArray(new long[] { 1, 5, 9, 3 }.Select(i => i % config.VocabSize).ToArray(), 4);
            model.Forward(ids, 4);
        }, TimeSpan.FromSeconds(20));
    }

    // ---- JSON ----

    /// <summary>Every node's path in a JSON tree (object keys and array indices), root excluded.</summary>
    public static List<(JsonNode? Parent, string Key, int Index)> Nodes(JsonNode root)
    {
        var list = new List<(JsonNode?, string, int)>();
        void Walk(JsonNode? n)
        {
            if (n is JsonObject o)
                foreach (var (k, v) in o.ToList()) { list.Add((o, k, -1)); Walk(v); }
            else if (n is JsonArray a)
                for (int i = 0; i < a.Count; i++) { list.Add((a, "", i)); Walk(a[i]); }
        }
        Walk(root);
        return list;
    }

    public static readonly string[] Retypes = ["\"64\"", "[64]", "null", "{}", "true", "64.5", "\"\"", "[]", "-1", "0", "1e308", "\"NaN\""];

    public static void Set((JsonNode? Parent, string Key, int Index) at, JsonNode? value)
    {
        if (at.Parent is JsonObject o) o[at.Key] = value;
        else if (at.Parent is JsonArray a) a[at.Index] = value;
    }

    public static void Remove((JsonNode? Parent, string Key, int Index) at)
    {
        if (at.Parent is JsonObject o) o.Remove(at.Key);
        else if (at.Parent is JsonArray a) a.RemoveAt(at.Index);
    }

    public static string Describe((JsonNode? Parent, string Key, int Index) at) =>
        at.Parent is null ? "<root>" : at.Parent.GetPath().TrimStart('$').TrimStart('.') + (at.Index >= 0 ? $"[{at.Index}]" : (at.Parent.GetPath() == "$" ? "" : ".") + at.Key);

    // ---- safetensors headers ----

    public static (JsonObject Header, byte[] Data) ReadHeader(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);
        return (JsonNode.Parse(bytes.AsSpan(8, (int)n))!.AsObject(), bytes[(8 + (int)n)..]);
    }

    public static void WriteHeader(string path, JsonObject header, byte[] data)
    {
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = (8 - json.Length % 8) % 8;
        File.Delete(path);   // a new file: an earlier run may still map the old one
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((long)(json.Length + pad)));
        fs.Write(json);
        for (int i = 0; i < pad; i++) fs.WriteByte((byte)' ');
        fs.Write(data);
    }

    public static void Truncate(string path, Random rng)
    {
        var bytes = File.ReadAllBytes(path);
        File.Delete(path);
        File.WriteAllBytes(path, bytes[..rng.Next(bytes.Length)]);
    }

    /// <summary>Flips 1-4 bytes in [from, to).</summary>
    public static string FlipBytes(string path, Random rng, long from, long to)
    {
        var bytes = File.ReadAllBytes(path);
        to = Math.Min(to, bytes.Length);
        var at = new List<long>();
        for (int i = 0, n = rng.Next(1, 5); i < n && to > from; i++)
        {
            long p = from + (long)(rng.NextDouble() * (to - from));
            bytes[p] = (byte)rng.Next(256);
            at.Add(p);
        }
        File.Delete(path);
        File.WriteAllBytes(path, bytes);
        return $"bytes at {string.Join(", ", at)}";
    }

    public static long HeaderEnd(string path)
    {
        using var fs = File.OpenRead(path);
        var b = new byte[8];
        return fs.Read(b) == 8 ? 8 + BitConverter.ToInt64(b) : 8;
    }

    /// <summary>One structural edit of a safetensors header: a tensor's dtype, shape, offsets or name, or an entry dropped.</summary>
    public static string EditHeader(string path, Random rng)
    {
        var (header, data) = ReadHeader(path);
        var names = header.Select(kv => kv.Key).Where(k => k != "__metadata__").ToList();
        if (names.Count == 0) return "no tensor to edit (the header holds none)";
        var name = names[rng.Next(names.Count)];
        var entry = header[name]!.AsObject();
        string what;
        switch (rng.Next(7))
        {
            case 0:
                var dt = new[] { "BF16", "F16", "F32", "I64", "I32", "BOOL", "F8_E4M3", "Q4", "", "f32" }[rng.Next(10)];
                entry["dtype"] = dt;
                what = $"dtype of '{name}' -> {dt}";
                break;
            case 1:
                var shape = entry["shape"]!.AsArray().Select(x => x!.GetValue<long>()).ToList();
                switch (rng.Next(4))
                {
                    case 0: if (shape.Count > 0) shape.RemoveAt(0); break;
                    case 1: shape.Add(1); break;
                    case 2: if (shape.Count > 0) shape[0] += 1; break;
                    default: shape.Reverse(); break;
                }
                entry["shape"] = new JsonArray(shape.Select(x => (JsonNode)x).ToArray());
                what = $"shape of '{name}' -> [{string.Join(", ", shape)}]";
                break;
            case 2:
                var offs = entry["data_offsets"]!.AsArray();
                int i = rng.Next(2);
                long delta = new long[] { -1, 1, -8, 4096, -1000000, long.MaxValue / 2 }[rng.Next(6)];
                offs[i] = offs[i]!.GetValue<long>() + delta;
                what = $"data_offsets[{i}] of '{name}' += {delta}";
                break;
            case 3:
                var renamed = Misspell(name, rng);
                header.Remove(name);
                header[renamed] = entry;
                what = $"'{name}' renamed '{renamed}'";
                break;
            case 4:
                header.Remove(name);
                what = $"'{name}' dropped from the header";
                break;
            case 5:
                var node = Retypes[rng.Next(Retypes.Length)];
                var field = new[] { "dtype", "shape", "data_offsets" }[rng.Next(3)];
                entry[field] = JsonNode.Parse(node);
                what = $"{field} of '{name}' -> {node}";
                break;
            default:
                header[name] = JsonNode.Parse(Retypes[rng.Next(Retypes.Length)]);
                what = $"entry '{name}' -> not an object";
                break;
        }
        WriteHeader(path, header, data);
        return what;
    }

    public static string Misspell(string name, Random rng) => rng.Next(4) switch
    {
        0 => name.Replace("model.layers.", "model.layer.", StringComparison.Ordinal),
        1 => "base_model." + name,
        2 => name.Length > 3 ? name.Remove(rng.Next(name.Length - 1), 1) : name + "x",
        _ => name.Replace('.', '_'),
    };
}
