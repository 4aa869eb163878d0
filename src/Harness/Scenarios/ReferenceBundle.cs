using Harness.Engine.IO;
using Harness.Engine.Tensors;
using Harness.Runs;

namespace Harness.Scenarios;

/// <summary>
/// The reference's outputs for one reference key: named tensors (captured modules, op outputs), optionally the greedy
/// tokens with their top-k logprobs, and the versions that produced them. Saved as one safetensors file with the
/// versions in its metadata, so recorded fixtures and live runs are the same thing on disk.
/// </summary>
public sealed record ReferenceBundle(IReadOnlyDictionary<string, Tensor> Tensors, TokenSequence? Tokens, IReadOnlyDictionary<string, string> Versions)
{
    private const string TokensName = "__tokens", TopKIdsName = "__topk_ids", TopKLogprobsName = "__topk_logprobs", InputPrefix = "__input.";

    /// <summary>The inputs the outputs were computed from (seeded prompts, weights of op scenarios).</summary>
    public IReadOnlyDictionary<string, Tensor> Inputs { get; init; } = new Dictionary<string, Tensor>();

    public void Save(string path)
    {
        var all = new Dictionary<string, Tensor>(Tensors);
        foreach (var (name, t) in Inputs) all[InputPrefix + name] = t;
        if (Tokens is not null)
        {
            int steps = Tokens.Length, k = steps == 0 ? 0 : Tokens.TopK[0].Count;
            all[TokensName] = Tensor.FromArray(Tokens.Tokens, steps);
            var ids = new long[steps * k];
            var lps = new float[steps * k];
            for (int s = 0; s < steps; s++)
            {
                var sorted = Tokens.SortedTopK(s);
                for (int j = 0; j < k; j++) { ids[s * k + j] = sorted[j].Token; lps[s * k + j] = (float)sorted[j].Logprob; }
            }
            all[TopKIdsName] = Tensor.FromArray(ids, steps, k);
            all[TopKLogprobsName] = Tensor.FromArray(lps, steps, k);
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        SafetensorsWriter.Save(path, all, Versions);
    }

    public static ReferenceBundle Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        var tensors = new Dictionary<string, Tensor>();
        var inputs = new Dictionary<string, Tensor>();
        foreach (var name in file.Names)
        {
            if (name.StartsWith(InputPrefix, StringComparison.Ordinal)) inputs[name[InputPrefix.Length..]] = file.ReadTensor(name);
            else if (!name.StartsWith("__", StringComparison.Ordinal)) tensors[name] = file.ReadTensor(name);
        }
        TokenSequence? tokens = null;
        if (file.Contains(TokensName))
        {
            var t = file.ReadTensor(TokensName).ToInt64Array();
            var ids = file.ReadTensor(TopKIdsName);
            var lps = file.ReadTensor(TopKLogprobsName).ToFloatArray();
            int k = ids.Shape[1];
            var flat = ids.ToInt64Array();
            var topk = Enumerable.Range(0, t.Length)
                .Select(s => (IReadOnlyList<TokenLogprob>)Enumerable.Range(0, k).Select(j => new TokenLogprob(flat[s * k + j], lps[s * k + j])).ToList())
                .ToList();
            tokens = new TokenSequence(t, topk);
        }
        return new ReferenceBundle(tensors, tokens, new Dictionary<string, string>(file.Metadata)) { Inputs = inputs };
    }
}
