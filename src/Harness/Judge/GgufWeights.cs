using System.Globalization;
using System.Text.Json.Nodes;
using Harness.Engine.IO;
using Harness.Reference;

namespace Harness.Judge;

/// <summary>
/// A GGUF's weights read back as HF's checkpoint: every tensor dequantized to float32 by gguf-py (the reference worker's
/// op judge_gguf_dequantize: the converter's own name map, llama's q_proj/k_proj row permutation undone), written with the
/// HF checkpoint's config and tokenizer (HF's config, not the GGUF's metadata: a wrong value there stays the engine's).
/// For a lossy GGUF (any weight not f32: bf16, f16, q8_0, k-quants) that folder is the reference of `judge --gguf` and
/// `judge --endpoint --served-gguf`: HF with the weights the engine computes with, while the float64 oracle keeps the
/// original checkpoint, so the reference's own error against the oracle is the quantization's own error, and the engine
/// is judged against C times that (<see cref="Comparison.OracleBound.Quantized"/>).
/// </summary>
public sealed record GgufWeights(string Gguf, string ReferenceDirectory, IReadOnlyDictionary<string, int> Types, double MaxWeightRelativeL2)
{
    /// <summary>Whether any weight is stored other than as f32 (then the reference is <see cref="ReferenceDirectory"/>).</summary>
    public bool Lossy => Types.Keys.Any(t => t != "f32");

    /// <summary>"q8_0 x13, f16 x2, f32 x5; weights up to 5.4e-03 relative L2 off the original".</summary>
    public string Description => string.Join(", ", Types.OrderByDescending(t => t.Value).ThenBy(t => t.Key, StringComparer.Ordinal)
            .Select(t => string.Create(CultureInfo.InvariantCulture, $"{t.Key} x{t.Value}"))) +
        string.Create(CultureInfo.InvariantCulture, $"; weights up to {MaxWeightRelativeL2:E2} relative L2 off the original");

    /// <summary>Dequantizes <paramref name="ggufHostPath"/> (converted from <paramref name="modelDirectory"/>) into a fresh
    /// scratch folder of the client's (release it with <see cref="ReferenceClient.Release"/>). A GGUF whose tensors do not
    /// match the checkpoint's weights one to one is an error naming the tensor.</summary>
    public static GgufWeights Read(ReferenceClient client, string ggufHostPath, string modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(client);
        var gguf = Path.GetFullPath(ggufHostPath);
        InputFiles.RequireRegular(gguf, "GGUF file");
        var shared = client.ShareDirectory(Path.GetFullPath(modelDirectory));
        var dir = client.ScratchDirectory("judge-gguf-weights");
        JsonObject r;
        try
        {
            r = client.Invoke("judge_gguf_dequantize", new JsonObject
            {
                ["gguf"] = client.WorkerPath(gguf),
                ["model_dir"] = client.WorkerPath(shared),
                ["out_dir"] = client.WorkerPath(dir),
            }).Result;
        }
        catch (ReferencePythonException e) when (e.PythonType is "ValueError" or "KeyError" or "FileNotFoundError")
        {
            // not a GGUF gguf-py reads, or one whose tensors are not the checkpoint's weights: bad input, one line
            client.Release(dir);
            throw new InputException(gguf, $"cannot read its weights as {Path.GetFileName(modelDirectory.TrimEnd('/'))}'s: {e.PythonMessage.Split('\n')[0]}");
        }
        var types = r["types"]!.AsObject().ToDictionary(t => t.Key, t => (int)t.Value!, StringComparer.Ordinal);
        double max = r["tensors"]!.AsArray().Select(t => (double)t!["relative_l2"]!).DefaultIfEmpty(0).Max();
        return new GgufWeights(gguf, dir, types, max);
    }
}
