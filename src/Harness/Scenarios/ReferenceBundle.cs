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
    private const string TokensName = "__tokens", TopKIdsName = "__topk_ids", TopKLogprobsName = "__topk_logprobs", InputPrefix = "__input.",
        OracleTopKName = "__oracle_topk_logprobs";

    /// <summary>
    /// <see cref="Tokens"/> as the token verdict judges them: with the float64 oracle's logprob of any token at the steps
    /// whose oracle logits were captured (<see cref="TokenSequence.WithOracleLogits"/>).
    /// </summary>
    public TokenSequence? JudgedTokens => Tokens?.WithOracleLogits(Tensors);

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
            if (Tokens.Oracle is not null)                                   // the float64 twin's, teacher-forced, in the sorted order
            {
                var oracle = new double[steps * k];
                for (int s = 0; s < steps; s++)
                {
                    var sorted = Tokens.SortedTopK(s);
                    for (int j = 0; j < k; j++) oracle[s * k + j] = Tokens.OracleOf(s, sorted[j].Token) ?? double.NaN;
                }
                all[OracleTopKName] = Tensor.FromArray(oracle, steps, k);
            }
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        SafetensorsWriter.Save(path, all, Versions);
    }

    /// <summary>
    /// Reads a recording. A file that is not a valid recording (truncated, corrupted, token tensors missing or of the
    /// wrong shape or dtype) is a one-line error naming the file and the tensor (<see cref="IInputError"/>).
    /// </summary>
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
        // A float64 oracle capture is the same module's output: same shape as the reference's, or the recording is broken.
        foreach (var (name, oracle) in tensors.Where(t => t.Key.StartsWith(Runs.LayerComparison.OraclePrefix, StringComparison.Ordinal)))
            if (tensors.TryGetValue(name[Runs.LayerComparison.OraclePrefix.Length..], out var module) && !oracle.Shape.SequenceEqual(module.Shape))
                throw new SafetensorsFormatException(path, name,
                    $"is {Shape.Format(oracle.Shape)}, but the module it is the float64 oracle of is {Shape.Format(module.Shape)}");
        TokenSequence? tokens = null;
        if (file.Contains(TokensName) || file.Contains(TopKIdsName) || file.Contains(TopKLogprobsName))
        {
            TensorInfo Need(string name, DType dtype, int rank)
            {
                if (!file.Contains(name)) throw new SafetensorsFormatException(path, name, "is missing (a recording with tokens has __tokens, __topk_ids and __topk_logprobs)");
                var info = file.GetInfo(name);
                if (info.DType != dtype || info.Shape.Length != rank)
                    throw new SafetensorsFormatException(path, name, $"is {SafetensorsDType.Name(info.DType)} {Shape.Format(info.Shape)}, expected a rank-{rank} {SafetensorsDType.Name(dtype)} tensor");
                return info;
            }
            var ti = Need(TokensName, DType.Int64, 1);
            var ii = Need(TopKIdsName, DType.Int64, 2);
            var li = Need(TopKLogprobsName, DType.Float32, 2);
            if (ii.Shape[0] != ti.Shape[0] || !li.Shape.AsSpan().SequenceEqual(ii.Shape) || (ti.Shape[0] > 0 && ii.Shape[1] < 1))
                throw new SafetensorsFormatException(path, TopKIdsName,
                    $"is {Shape.Format(ii.Shape)} with __tokens {Shape.Format(ti.Shape)} and __topk_logprobs {Shape.Format(li.Shape)}: expected [steps, k] for both");
            var t = file.ReadTensor(TokensName).ToInt64Array();
            int k = ii.Shape[1];
            var flat = file.ReadTensor(TopKIdsName).ToInt64Array();
            var lps = file.ReadTensor(TopKLogprobsName).ToFloatArray();
            var topk = Enumerable.Range(0, t.Length)
                .Select(s => (IReadOnlyList<TokenLogprob>)Enumerable.Range(0, k).Select(j => new TokenLogprob(flat[s * k + j], lps[s * k + j])).ToList())
                .ToList();
            tokens = new TokenSequence(t, topk);
            if (file.Contains(OracleTopKName))
            {
                var oi = Need(OracleTopKName, DType.Float64, 2);
                if (!oi.Shape.AsSpan().SequenceEqual(ii.Shape))
                    throw new SafetensorsFormatException(path, OracleTopKName, $"is {Shape.Format(oi.Shape)}, expected {Shape.Format(ii.Shape)} as __topk_ids");
                var o = file.ReadTensor(OracleTopKName).ToDoubleArray();
                tokens = new TokenSequence(t, topk) { Oracle = Enumerable.Range(0, t.Length).Select(s => o.AsSpan(s * k, k).ToArray()).ToList() };
            }
        }
        return new ReferenceBundle(tensors, tokens, new Dictionary<string, string>(file.Metadata)) { Inputs = inputs };
    }
}
